"""SDXL, SD3/SD3.5 and Flux.1 on tiny offline pipelines: runs of each method × PEFT, checkpoints and
LoRA that diffusers loads, exact resume, the flow-matching σ streams, clear errors."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from contract.families import family as family_spec
from contract.train_config import ConfigError
from models import checkpoints as ckpt
from models.families import load_family, scan_dataset
from models.flow_matching import stream_mean_sigma
from models.run import run_training

from .conftest import (
    build_trainer,
    check_exact_resume,
    example_inputs,
    pipeline_class,
    with_random_lora,
    write_caption_folder,
)

FAMILIES = ("sd3", "sdxl", "flux")
FLOW_FAMILIES = tuple(f for f in FAMILIES if family_spec(f).flow_matching)
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize(("method", "peft"), [("difftune", "full"), ("difftune", "lora"), ("standard", "full"),
                                              ("standard", "lora")])
def test_each_method_and_peft_trains_and_diffusers_loads_the_checkpoint(make_family_config, caption_folder,
                                                                           tmp_path, family, method, peft):
    config = make_family_config(family, method=method, peft=peft, max_steps=2, checkpoint_every=2, sample_every=2)
    seen = []
    result = run_training(config, data_dir=caption_folder, out_dir=tmp_path / "out", cache_dir=tmp_path / "cache",
                          on_progress=seen.append)
    assert [p.step for p in seen] == [1, 2] and all(torch.isfinite(torch.tensor(p.loss)) for p in seen)
    assert (seen[-1].loss_bank is not None) == (method == "difftune")
    checkpoint = result.fit.last_checkpoint
    assert json.loads((checkpoint / "model_index.json").read_text())["_class_name"] == family_spec(family).pipeline
    assert (tmp_path / "out" / "samples" / "step_0000002.png").exists()
    pipe = pipeline_class(family).from_pretrained(checkpoint)
    if peft == "lora":
        pipe.load_lora_weights(checkpoint / "lora")
    image = pipe("a red cat", num_inference_steps=2, height=16, width=16, output_type="np",
                 generator=torch.Generator().manual_seed(0), **pipe_options(family)).images
    assert image.shape == (1, 16, 16, 3) and 0 <= image.min() and image.max() <= 1


def pipe_options(family: str) -> dict:
    return {"max_sequence_length": 16} if family in ("sd3", "flux") else {}


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("merge", [False, True])
def test_lora_is_saved_in_the_format_the_pipeline_loads(make_family_config, tmp_path, family, merge):
    config = make_family_config(family, peft="lora", lora_rank=2, lora_merge=merge)
    fam = load_family(config)
    model = fam.denoiser
    x, t, cond = example_inputs(fam, config)
    with torch.no_grad():
        base_out = fam.predict(model, x, t, cond)
    with_random_lora(model, config)
    with torch.no_grad():
        tuned = fam.predict(model, x, t, cond)
        assert not torch.allclose(tuned, base_out, atol=1e-4)
        fam.save_pretrained(model, tmp_path / "ck")
    pipe = pipeline_class(family).from_pretrained(tmp_path / "ck")
    with torch.no_grad():
        net = getattr(pipe, fam.denoiser_part)
        assert torch.allclose(fam.predict(net, x, t, cond), tuned if merge else base_out, atol=1e-5)
        if not merge:  # the adapter goes on top of the base weights with diffusers' own loader
            pipe.load_lora_weights(tmp_path / "ck" / "lora")
            assert torch.allclose(fam.predict(getattr(pipe, fam.denoiser_part), x, t, cond), tuned, atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_resume_reproduces_the_unbroken_run(make_family_config, caption_folder, tmp_path, family):
    check_exact_resume(make_family_config(family, max_steps=4), caption_folder, tmp_path, stop_at=2)


@pytest.mark.parametrize("family", FLOW_FAMILIES)
def test_flow_streams_draw_sigma_as_defined(make_family_config, caption_folder, tmp_path, family):
    """Target rows follow q(σ)·σ^s, bank rows q(σ)·(1−σ)^s (s = 1), standard tuning q itself."""
    config = make_family_config(family, batch_size=10)
    trainer = build_trainer(config, caption_folder, tmp_path / "o", tmp_path / "c")
    native = trainer.family.native_density()
    sigmas = torch.cat([trainer.next_batch()[1] for _ in range(400)]).view(400, 10).double()
    assert sigmas.dtype.is_floating_point and 0 < sigmas.min() and sigmas.max() < 1
    assert sigmas[:, :8].mean().item() == pytest.approx(stream_mean_sigma(native, 1.0, "target"), abs=0.015)
    assert sigmas[:, 8:].mean().item() == pytest.approx(stream_mean_sigma(native, 1.0, "bank"), abs=0.03)
    standard = build_trainer(config.model_copy(update={"method": "standard"}), caption_folder, tmp_path / "s",
                             tmp_path / "c")
    plain = torch.cat([standard.next_batch()[1] for _ in range(300)]).double()
    assert plain.mean().item() == pytest.approx(stream_mean_sigma(native, 0.0, "target"), abs=0.015)


@pytest.mark.parametrize("family", FAMILIES)
def test_bad_base_folders_and_resolutions_name_the_field(make_family_config, tiny_pipeline, tmp_path, family):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_pipeline(family), broken)
    part = "unet" if (broken / "unet").is_dir() else "transformer"
    shutil.rmtree(broken / part)
    with pytest.raises(ConfigError, match=rf"base_model: .* \(no {part}/ inside\)"):
        load_family(make_family_config(family, base_model=str(broken)))
    with pytest.raises(ConfigError, match="resolution: "):
        load_family(make_family_config(family, resolution=18))


@pytest.mark.parametrize("family", FAMILIES)
def test_captions_must_name_existing_images(make_family_config, caption_folder, family):
    (caption_folder / "metadata.jsonl").write_text('{"file_name": "missing.png", "text": "a cat"}\n')
    with pytest.raises(ValueError, match="missing.png"):
        scan_dataset(make_family_config(family), caption_folder)


def test_sd3_trains_without_t5_as_diffusers_allows(make_family_config, tiny_pipeline, caption_folder, tmp_path):
    base = tmp_path / "no_t5"
    shutil.copytree(tiny_pipeline("sd3"), base)
    for part in ("text_encoder_3", "tokenizer_3"):
        shutil.rmtree(base / part)
    config = make_family_config("sd3", base_model=str(base), max_steps=1, checkpoint_every=1, method="standard")
    result = run_training(config, data_dir=caption_folder, out_dir=tmp_path / "out", cache_dir=tmp_path / "cache")
    index = json.loads((result.fit.last_checkpoint / "model_index.json").read_text())
    assert index["text_encoder_3"] == [None, None] and not (result.fit.last_checkpoint / "text_encoder_3").exists()
    pipe = pipeline_class("sd3").from_pretrained(result.fit.last_checkpoint, text_encoder_3=None, tokenizer_3=None)
    image = pipe("a red cat", num_inference_steps=2, height=16, width=16, output_type="np").images
    assert image.shape == (1, 16, 16, 3)
    assert json.loads((ckpt.latest_checkpoint(tmp_path / "out") / "meta.json").read_text())["t5"] is False


@pytest.mark.parametrize("family", FAMILIES)
def test_the_bank_is_keyed_by_what_changes_its_images(make_family_config, caption_folder, family):
    """A bank sampled at another size (or with another text length / embedded guidance) is another bank."""
    from models.bank import bank_key

    def key(**overrides):
        config = make_family_config(family, **overrides)
        loaded = load_family(config)
        loaded.attach_dataset(scan_dataset(config, caption_folder), config)
        return bank_key(loaded, config.bank)

    base = key()
    assert key() == base
    assert key(resolution=32, upscale_small_images=True) != base
    if family != "sdxl":
        assert key(max_sequence_length=8) != base
    if family == "flux":
        assert key(distilled_guidance=2.0) != base


@pytest.mark.slow
def test_ddp_two_cpu_processes_tune_flux_lora(make_family_config, tmp_path):
    """Flux LoRA with Diff-Tuning in aspect-ratio buckets under torchrun (gloo): the ranks agree on each
    step's bucket; one checkpoint, its LoRA loads in FluxPipeline."""
    import os
    import subprocess
    import sys

    import yaml

    caption_folder = write_caption_folder(tmp_path / "d", ["a", "b", "c", "d"], sizes=[(40, 24), (24, 40), (20, 20),
                                                                                     (40, 24)])
    config = make_family_config("flux", peft="lora", max_steps=2, checkpoint_every=2, sample_every=2,
                                aspect_buckets=True, bucket_step=4)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config.model_dump(mode="json")))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "cli.main",
           "train", str(tmp_path / "c.yaml"), "--data", str(caption_folder), "--out", str(tmp_path / "run"),
           "--cache-dir", str(tmp_path / "cache"), "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    last = ckpt.latest_checkpoint(tmp_path / "run")
    assert last.name == "step_0000002" and json.loads((last / "meta.json").read_text())["world_size"] == 2
    pipe = pipeline_class("flux").from_pretrained(config.base_model)
    pipe.load_lora_weights(last / "lora")
    assert any("lora" in name for name, _ in pipe.transformer.named_parameters())
