"""Trainer: the Diff-Tuning batch, checkpoints, exact resume, stopping, progress."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import DiTPipeline
from PIL import Image

from models import checkpoints as ckpt
from models.bank import build_bank
from models.data import scan_image_folder
from models.families import load_family
from models.latents import encode_image_folder
from models.run import run_training
from models.trainer import Trainer


def _trainer(config, data_dir, out_dir, cache_dir):
    family = load_family(config)
    bank = build_bank(family, config, cache_dir) if config.uses_bank else None
    folder = scan_image_folder(data_dir, resolution=config.resolution)
    family.setup_labels(folder.class_names, config.bank_label)
    latents = encode_image_folder(family, folder, resolution=16, flip=config.random_flip, cache_dir=cache_dir)
    return Trainer(family, config, latents, bank, out_dir)


def test_difftune_batch_composition(make_config, image_folder, tmp_path):
    trainer = _trainer(make_config(batch_size=10, bank_share=0.2, label_dropout=0.0), image_folder,
                       tmp_path / "o", tmp_path / "c")
    latents, t, cond = trainer.next_batch()
    assert latents.shape == (10, 4, 8, 8) and t.shape == (10,)
    assert cond[:8].max() < 3  # target rows keep their labels (no drop configured)
    assert cond[8:].tolist() == [1000, 1000]  # bank rows: always the null label
    ts = torch.cat([trainer.next_batch()[1] for _ in range(300)]).view(300, 10).double()
    assert ts[:, :8].mean().item() == pytest.approx(666, abs=25)
    assert ts[:, 8:].mean().item() == pytest.approx(333, abs=40)


def test_standard_fine_tuning_is_uniform_with_no_bank(make_config, image_folder, tmp_path):
    trainer = _trainer(make_config(method="standard", batch_size=10), image_folder, tmp_path / "o", tmp_path / "c")
    assert trainer.split.bank == 0 and trainer.bank is None
    assert torch.allclose(trainer.process.probs["target"], torch.full((1000,), 1e-3, dtype=torch.float64))
    out = trainer.train_step()
    assert out["loss"].item() == pytest.approx(out["loss_target"].item())


def test_run_writes_checkpoints_samples_and_keeps_the_last_n(make_config, image_folder, tmp_path):
    config = make_config(max_steps=6, checkpoint_every=2, keep_checkpoints=2, sample_every=3)
    seen = []
    result = run_training(config, data_dir=image_folder, out_dir=tmp_path / "run", cache_dir=tmp_path / "cache",
                          on_progress=seen.append)
    names = [p.name for p in ckpt.list_checkpoints(tmp_path / "run")]
    assert names == ["step_0000004", "step_0000006"]
    assert [p.step for p in seen] == [1, 2, 3, 4, 5, 6]
    assert all(p.loss_bank is not None and p.loss > 0 for p in seen)
    assert seen[-1].eta_seconds == 0 and seen[0].images_per_sec > 0
    assert sorted(p.name for p in (tmp_path / "run" / "samples").iterdir()) == ["step_0000003.png", "step_0000006.png"]
    with Image.open(tmp_path / "run" / "samples" / "step_0000006.png") as grid:
        assert grid.size[0] > 16 and grid.size[1] > 16
    last = result.fit.last_checkpoint
    meta = json.loads((last / "meta.json").read_text())
    assert meta["step"] == 6 and meta["config"]["max_steps"] == 6 and meta["num_classes"] == 3
    assert meta["id2label"] == {"0": "cat", "1": "dog", "2": "owl"}
    assert set(meta["metrics"]) >= {"loss", "loss_target", "loss_bank", "images_per_sec"}
    pipe = DiTPipeline.from_pretrained(last)
    assert pipe.labels == {"cat": 0, "dog": 1, "owl": 2}
    assert not list((tmp_path / "run" / "checkpoints").glob(".*partial"))


def test_resume_reproduces_the_unbroken_run(make_config, image_folder, tmp_path):
    """Stop at step 4, resume in a fresh Trainer: steps 5 and 6 match an unbroken run exactly."""
    config = make_config(max_steps=6, checkpoint_every=4, sample_every=100, label_dropout=0.3)
    unbroken = _trainer(config, image_folder, tmp_path / "a", tmp_path / "cache")
    losses_a = [unbroken.train_step()["loss"].item() for _ in range(6)]

    first = _trainer(config.model_copy(update={"max_steps": 4}), image_folder, tmp_path / "b", tmp_path / "cache")
    first.fit()
    assert ckpt.latest_checkpoint(tmp_path / "b").name == "step_0000004"
    resumed = _trainer(config, image_folder, tmp_path / "b", tmp_path / "cache")
    resumed.resume(ckpt.latest_checkpoint(tmp_path / "b"))
    assert resumed.step == 4
    losses_b = [resumed.train_step()["loss"].item() for _ in range(2)]
    assert losses_b == losses_a[4:]
    for (name, a), b in zip(unbroken.module.state_dict().items(), resumed.module.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    for a, b in zip(unbroken.ema.shadow, resumed.ema.shadow, strict=True):
        assert torch.equal(a, b)


def test_run_refuses_to_overwrite_and_resumes_on_request(make_config, image_folder, tmp_path):
    config = make_config(max_steps=2, checkpoint_every=2, sample_every=100)
    run_training(config, data_dir=image_folder, out_dir=tmp_path / "r", cache_dir=tmp_path / "c")
    with pytest.raises(FileExistsError, match="--resume"):
        run_training(config, data_dir=image_folder, out_dir=tmp_path / "r", cache_dir=tmp_path / "c")
    longer = config.model_copy(update={"max_steps": 4})
    result = run_training(longer, data_dir=image_folder, out_dir=tmp_path / "r", cache_dir=tmp_path / "c",
                          resume=True)
    assert result.fit.step == 4


def test_should_stop_saves_a_checkpoint_and_stops(make_config, image_folder, tmp_path):
    config = make_config(max_steps=50, checkpoint_every=100, sample_every=100, log_every=3)
    result = run_training(config, data_dir=image_folder, out_dir=tmp_path / "r", cache_dir=tmp_path / "c",
                          should_stop=lambda: True)
    assert result.fit.stopped and result.fit.step == 1  # asked after every step in one process
    assert result.fit.last_checkpoint.name == "step_0000001"


def test_difffit_run_exports_plain_diffusers_weights(make_config, image_folder, tmp_path):
    config = make_config(peft="difffit", max_steps=2, checkpoint_every=2, sample_every=100)
    result = run_training(config, data_dir=image_folder, out_dir=tmp_path / "r", cache_dir=tmp_path / "c")
    pipe = DiTPipeline.from_pretrained(result.fit.last_checkpoint)
    assert not any("difffit" in k for k in pipe.transformer.state_dict())


def test_dataset_errors_come_before_any_model_work(make_config, tmp_path):
    (tmp_path / "d" / "a").mkdir(parents=True)
    (tmp_path / "d" / "a" / "x.png").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="x.png: not a readable image"):
        run_training(make_config(base_model=str(tmp_path / "does-not-exist")), data_dir=tmp_path / "d",
                     out_dir=tmp_path / "o", cache_dir=tmp_path / "c")
    assert not (tmp_path / "o").exists() and not (tmp_path / "c").exists()


def test_num_classes_mismatch_is_reported(make_config, image_folder, tmp_path):
    with pytest.raises(ValueError, match="num_classes: config says 5"):
        run_training(make_config(num_classes=5), data_dir=image_folder, out_dir=tmp_path / "o",
                     cache_dir=tmp_path / "c")
