"""Stable Diffusion family: captioned datasets, prompt-id conditions, runs, export, resume, PEFT."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import StableDiffusionPipeline
from PIL import Image

from models import checkpoints as ckpt
from models.bank import bank_key
from models.captions import scan_caption_folder
from models.data import DatasetError
from models.families import load_family, scan_dataset
from models.peft import apply_difffit, merge_difffit
from models.run import run_training

from .conftest import build_trainer, check_exact_resume, with_random_lora, write_caption_folder

PIPE = dict(safety_checker=None, requires_safety_checker=False)
pytestmark = pytest.mark.usefixtures("one_thread")


def _unet_inputs(family, n=2):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(n, 4, 8, 8, generator=gen)
    emb = family.encode_prompts(["a cat", "a dog"][:n])
    return x, torch.tensor([10, 700][:n]), emb


# --- datasets -------------------------------------------------------------------------------------


def test_metadata_and_sidecar_captions_are_read(tmp_path):
    meta = scan_caption_folder(write_caption_folder(tmp_path / "m", ["a cat", "a dog"]), resolution=16)
    assert meta.captions == ["a cat", "a dog"] and meta.labels == [1, 2] and meta.controls is None
    side = tmp_path / "s"
    side.mkdir()
    for i, text in enumerate(["one", "two"]):
        Image.new("RGB", (20, 20), (i * 80, 0, 0)).save(side / f"{i}.png")
        (side / f"{i}.txt").write_text(text + "\n")
    assert scan_caption_folder(side, resolution=16).captions == ["one", "two"]


def test_bad_captions_files_name_the_file_and_line(tmp_path):
    root = write_caption_folder(tmp_path / "m", ["a cat", "a dog"])
    meta = root / "metadata.jsonl"
    meta.write_text(meta.read_text() + '{"file_name": "gone.png", "text": "x"}\nnot json\n{"file_name": "0.png"}\n')
    with pytest.raises(DatasetError) as err:
        scan_caption_folder(root, resolution=16)
    text = str(err.value)
    assert "gone.png: listed in metadata.jsonl but missing" in text
    assert "metadata.jsonl:4: not valid JSON" in text
    assert "metadata.jsonl:5: needs a string 'text'" in text
    side = tmp_path / "s"
    side.mkdir()
    Image.new("RGB", (20, 20)).save(side / "a.png")
    with pytest.raises(DatasetError, match=r"a.png: no caption \(expected a.txt"):
        scan_caption_folder(side, resolution=16)


# --- conditions -------------------------------------------------------------------------------------


def test_target_rows_use_caption_ids_and_bank_rows_the_empty_prompt(make_sd_config, caption_folder, tmp_path):
    config = make_sd_config(batch_size=10, label_dropout=0.0)
    trainer = build_trainer(config, caption_folder, tmp_path / "o", tmp_path / "c")
    family = trainer.family
    _, _, cond = trainer.next_batch()
    assert sorted(set(cond[:8].tolist())) == [1, 2, 3, 4] and cond[8:].tolist() == [0, 0]
    assert family.bank_prompts == sorted(["a red cat", "a blue dog", "an owl", "a yak"])  # dataset captions
    table = family.text_table.rows(torch.tensor([0, 2]))["embeds"]
    assert torch.allclose(table[0], family.encode_prompts([""])["embeds"][0])
    assert torch.allclose(table[1], family.encode_prompts(["a blue dog"])["embeds"][0])
    assert torch.equal(family.drop_conditions(torch.tensor([1, 2, 3]), 1.0, torch.Generator()), torch.zeros(3).long())


def test_prompt_conditioned_retention_and_user_bank_prompts(make_sd_config, caption_folder, tmp_path):
    config = make_sd_config(batch_size=10, bank_label="prompt", bank_prompts=["a castle", "a tree"])
    trainer = build_trainer(config, caption_folder, tmp_path / "o", tmp_path / "c")
    family = trainer.family
    _, _, cond = trainer.next_batch()
    assert all(family.bank_offset <= c < family.bank_offset + 2 for c in cond[8:].tolist())
    row = family.text_table.rows(torch.tensor([family.bank_offset + 1]))["embeds"][0]
    assert torch.allclose(row, family.encode_prompts(["a tree"])["embeds"][0])
    other = load_family(config)
    other.attach_dataset(scan_dataset(config, caption_folder), make_sd_config())
    assert bank_key(family, config.bank) != bank_key(other, config.bank)  # prompts are part of the key


def test_prompt_retention_is_only_for_text_families(make_sd_config):
    with pytest.raises(ValueError, match="bank_label: 'source' is for class-conditional families"):
        make_sd_config(bank_label="source")
    from contract.train_config import ConfigError, parse_config

    with pytest.raises(ConfigError, match="needs a text-conditioned family"):
        parse_config({"family": "dit", "bank_label": "prompt"})


# --- runs ---------------------------------------------------------------------------------------------


def test_sd_run_writes_a_pipeline_that_diffusers_loads(make_sd_config, caption_folder, tmp_path):
    config = make_sd_config(max_steps=2, checkpoint_every=2, sample_every=2, validation_prompts=["a cat", "x"])
    result = run_training(config, data_dir=caption_folder, out_dir=tmp_path / "r", cache_dir=tmp_path / "c")
    last = result.fit.last_checkpoint
    meta = json.loads((last / "meta.json").read_text())
    assert meta["family"] == "sd" and meta["num_captions"] == 4 and meta["bank_label"] == "null"
    with Image.open(tmp_path / "r" / "samples" / "step_0000002.png") as grid:
        assert grid.size == (2 + 2 * 18, 2 + 18)  # two validation prompts side by side
    pipe = StableDiffusionPipeline.from_pretrained(last, **PIPE)
    images = pipe(["a cat"], num_inference_steps=2, height=16, width=16, output_type="np").images
    assert images.shape == (1, 16, 16, 3)
    assert list((tmp_path / "c" / "text").glob("*.safetensors"))  # cached text embeddings


def test_sd_resume_reproduces_the_unbroken_run(make_sd_config, caption_folder, tmp_path):
    check_exact_resume(make_sd_config(max_steps=5, checkpoint_every=3, label_dropout=0.3), caption_folder,
                       tmp_path, stop_at=3)


# --- PEFT ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("merge", [False, True])
def test_sd_lora_saves_diffusers_loadable_weights(make_sd_config, tmp_path, merge):
    config = make_sd_config(peft="lora", lora_rank=2, lora_merge=merge)
    family = load_family(config)
    model = family.denoiser
    base_out = family.text_call(model)(*_unet_inputs(family))
    trainable = with_random_lora(model, config)
    assert trainable and all("lora_" in n for n, p in model.named_parameters() if p.requires_grad)
    x, t, emb = _unet_inputs(family)
    with torch.no_grad():
        tuned = family.text_call(model)(x, t, emb)
        family.save_pretrained(model, tmp_path / "ck")
    pipe = StableDiffusionPipeline.from_pretrained(tmp_path / "ck", **PIPE)
    with torch.no_grad():
        plain = pipe.unet(x, t, encoder_hidden_states=emb["embeds"]).sample
        assert torch.allclose(plain, tuned if merge else base_out, atol=1e-5)
        if not merge:  # the adapter goes on top of the base weights with diffusers' own loader
            pipe.load_lora_weights(tmp_path / "ck" / "lora")
            assert torch.allclose(pipe.unet(x, t, encoder_hidden_states=emb["embeds"]).sample, tuned, atol=1e-5)


def test_lora_with_standard_fine_tuning_trains_only_the_adapter(make_sd_config, caption_folder, tmp_path):
    config = make_sd_config(method="standard", peft="lora", max_steps=2, checkpoint_every=2)
    trainer = build_trainer(config, caption_folder, tmp_path / "o", tmp_path / "c")
    frozen = {n: p.clone() for n, p in trainer.module.named_parameters() if "lora_" not in n}
    trainer.fit()
    assert all(torch.equal(p, frozen[n]) for n, p in trainer.module.named_parameters() if "lora_" not in n)
    assert (ckpt.latest_checkpoint(tmp_path / "o") / "lora" / "pytorch_lora_weights.safetensors").exists()


def test_difffit_applies_to_the_sd_unet(make_sd_config):
    family = load_family(make_sd_config())
    unet = family.denoiser
    apply_difffit(unet)
    names = [n for n, p in unet.named_parameters() if p.requires_grad]
    assert any(n.endswith("attn1.difffit_gamma") for n in names)
    assert not any(n.endswith("to_q.weight") for n in names)
    with torch.no_grad():
        for n, p in unet.named_parameters():
            if n.endswith("difffit_gamma"):
                p.fill_(0.6)
        x, t, emb = _unet_inputs(family)
        merged = merge_difffit(unet)
        assert torch.allclose(family.text_call(unet)(x, t, emb), family.text_call(merged)(x, t, emb), atol=1e-5)


def test_cli_builds_a_tiny_sd_and_trains_it(caption_folder, tmp_path):
    import yaml
    from typer.testing import CliRunner

    from cli.main import app

    runner = CliRunner()
    assert runner.invoke(app, ["tiny", "sd", str(tmp_path / "sd")]).exit_code == 0
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(dict(
        family="sd", base_model=str(tmp_path / "sd"), resolution=16, batch_size=4, max_steps=1, sample_steps=2,
        checkpoint_every=1, sample_every=1, bank={"size": 4, "batch_size": 4, "num_inference_steps": 2})))
    result = runner.invoke(app, ["train", str(config), "--data", str(caption_folder), "--out", str(tmp_path / "r"),
                                 "--cache-dir", str(tmp_path / "cache"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "r" / "checkpoints" / "step_0000001" / "unet").is_dir()


def test_cli_bank_for_sd_uses_the_configured_prompts(tiny_sd, tmp_path):
    import yaml
    from typer.testing import CliRunner

    from cli.main import app

    values = dict(family="sd", base_model=str(tiny_sd), resolution=16,
                  bank={"size": 2, "batch_size": 2, "num_inference_steps": 2})
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(values))
    args = ["bank", str(config), "--cache-dir", str(tmp_path / "cache"), "--device", "cpu"]
    refused = CliRunner().invoke(app, args)
    assert refused.exit_code == 2 and "bank_prompts" in refused.output
    config.write_text(yaml.safe_dump({**values, "bank_prompts": ["a castle"]}))
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.strip().splitlines()[-1])["shape"] == [2, 4, 8, 8]
