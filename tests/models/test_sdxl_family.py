"""SDXL specifics (micro-conditioning, the zero null condition) and the SDXL ControlNet family."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionXLControlNetPipeline, StableDiffusionXLPipeline
from PIL import Image

from contract.buckets import crop_geometry
from models.data import center_crop
from models.families import load_family, scan_dataset

from .conftest import check_exact_resume, run_with_convergence, tiny_config

pytestmark = pytest.mark.usefixtures("one_thread")
DEFAULT_IDS = [16, 16, 0, 0, 16, 16]  # at 16 px: orig_h, orig_w, crop_top, crop_left, target_h, target_w


def _prepared(config, data):
    family = load_family(config)
    dataset = scan_dataset(config, data)
    family.attach_dataset(dataset, config)
    return family, family.prepare_target(dataset, config, None, cache_dir=None)


@pytest.fixture
def sized_folder(tmp_path):
    """Three captioned images of (width, height) 28×20, 20×30 and 70×40."""
    root = tmp_path / "sized"
    root.mkdir()
    lines = []
    for i, size in enumerate([(28, 20), (20, 30), (70, 40)]):
        Image.new("RGB", size, (40 * i, 90, 200)).save(root / f"{i}.png")
        lines.append(json.dumps({"file_name": f"{i}.png", "text": f"image {i}"}))
    (root / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture
def make_cn_config(tiny_pipeline):
    def make(**overrides):
        values = {"family": "controlnet_sdxl", "sample_every": 100, "validation_guidance_scale": 2.0, **overrides}
        return tiny_config(tiny_pipeline("sdxl"), **values)

    return make


# --- SDXL conditions ---------------------------------------------------------------------------------


def test_micro_conditioning_records_original_size_and_crop(make_family_config, sized_folder):
    family, target = _prepared(make_family_config("sdxl", bank_label="prompt"), sized_folder)
    # shorter side resized to 16 (70×40 is first halved to 35×20, as data.center_crop does), then centre-cropped
    assert target.labels.tolist() == [[1, 20, 28, 0, 3, 16, 16], [2, 30, 20, 4, 0, 16, 16],
                                      [3, 40, 70, 0, 6, 16, 16]]
    pixels = np.random.default_rng(0).integers(0, 256, (27, 16, 3), dtype=np.uint8)  # no resize: exact pixels
    assert crop_geometry(16, 27, (16, 16)) == (16, 27, 5, 0)
    assert np.array_equal(np.asarray(center_crop(Image.fromarray(pixels), 16)), pixels[5:21])
    dropped = family.drop_conditions(target.labels, 1.0, torch.Generator())
    assert dropped[:, 0].tolist() == [0, 0, 0] and torch.equal(dropped[:, 1:], target.labels[:, 1:])
    assert family.bank_conditions(torch.tensor([0, 2])).tolist() == [[family.bank_offset, *DEFAULT_IDS],
                                                                      [family.bank_offset + 2, *DEFAULT_IDS]]
    rows = family.conditions_for_prompts(torch.tensor([0, 2]))  # (2, 7) at the default sizes
    assert torch.equal(family.bank_conditions(rows), family.bank_conditions(torch.tensor([0, 2])))
    x = torch.randn(2, *family.latent_shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():  # the size/crop ids reach the UNet
        a = family.predict(family.denoiser, x, torch.tensor([300, 300]), target.labels[:2])
        b = family.predict(family.denoiser, x, torch.tensor([300, 300]), target.labels[:2, :1].squeeze(1))
    assert not torch.allclose(a, b)


def test_null_condition_is_zeros_when_the_pipeline_zeroes_empty_prompts(make_family_config, tiny_pipeline,
                                                                         caption_folder, tmp_path):
    config = make_family_config("sdxl")
    family, _ = _prepared(config, caption_folder)
    assert family.bank_conditions(torch.tensor([0, 3])).tolist() == [[0, *DEFAULT_IDS]] * 2  # bank_label: null
    emb = family.embeddings(torch.tensor([0, 1]))
    assert emb["embeds"].shape == (2, 16, 64) and emb["pooled"].shape == (2, 32)
    assert emb["embeds"][0].abs().sum() == 0 and emb["pooled"][0].abs().sum() == 0
    pipe = StableDiffusionXLPipeline.from_pretrained(config.base_model)
    embeds, _, pooled, _ = pipe.encode_prompt("a red cat", do_classifier_free_guidance=False)
    assert torch.allclose(emb["embeds"][1], embeds[0]) and torch.allclose(emb["pooled"][1], pooled[0])
    assert emb["time_ids"].tolist() == [[16.0, 16.0, 0.0, 0.0, 16.0, 16.0]] * 2
    assert family.metadata()["force_zeros_for_empty_prompt"] is True
    kept = tmp_path / "kept"  # a base that encodes "" for the unconditional branch instead
    shutil.copytree(tiny_pipeline("sdxl"), kept)
    index = json.loads((kept / "model_index.json").read_text())
    (kept / "model_index.json").write_text(json.dumps({**index, "force_zeros_for_empty_prompt": False}))
    family, _ = _prepared(make_family_config("sdxl", base_model=str(kept)), caption_folder)
    assert torch.allclose(family.embeddings(torch.tensor([0]))["embeds"], family.encode_prompts([""])["embeds"])


# --- SDXL ControlNet ---------------------------------------------------------------------------------


def test_sdxl_controlnet_run_records_convergence_and_exports_a_pipeline(make_cn_config, caption_folder, tmp_path):
    config, last, _ = run_with_convergence(make_cn_config(), caption_folder, tmp_path)
    index = json.loads((last / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionXLControlNetPipeline" and index["force_zeros_for_empty_prompt"]
    assert index["scheduler"] == ["diffusers", "EulerDiscreteScheduler"]  # the base's sampler, not DDPM
    pipe = StableDiffusionXLControlNetPipeline.from_pretrained(last)
    out = pipe(["a cat"], image=torch.rand(1, 3, 16, 16), num_inference_steps=2, height=16, width=16,
               output_type="np", generator=torch.Generator().manual_seed(0)).images
    assert out.shape == (1, 16, 16, 3) and 0 <= out.min() and out.max() <= 1
    resumed = load_family(config.model_copy(update={"base_model": str(last)}))  # controlnet/ is loaded
    zero_conv = resumed.denoiser.controlnet_down_blocks[0].weight  # zero-initialised by from_unet
    assert zero_conv.abs().sum() > 0 and torch.equal(zero_conv, pipe.controlnet.controlnet_down_blocks[0].weight)


def test_sdxl_controlnet_resume_is_exact_and_rows_carry_sizes_and_controls(make_cn_config, caption_folder,
                                                                            tmp_path):
    config = make_cn_config(max_steps=4, checkpoint_every=2, label_dropout=0.3, batch_size=6)
    trainer = check_exact_resume(config, caption_folder, tmp_path, stop_at=2)
    _, _, cond = trainer.next_batch()
    n = len(trainer.target)
    assert cond.shape == (6, 8) and trainer.target.labels[:, -1].tolist() == list(range(n))
    target, bank = cond[: trainer.split.target], cond[trainer.split.target :]
    assert len(bank) and target[:, 1:7].tolist() == [[20, 20, 0, 0, 16, 16]] * len(target)  # 20×20 images at 16
    assert bank[:, :7].tolist() == [[0, *DEFAULT_IDS]] * len(bank) and bank[:, 7].min() >= n  # null prompt, bank controls


def test_tiny_sdxl_controlnet_folder_is_a_base_the_family_loads(make_cn_config, tmp_path):
    from typer.testing import CliRunner

    from cli.main import app

    result = CliRunner().invoke(app, ["tiny", "sdxl", str(tmp_path / "cn"), "--controlnet"])
    assert result.exit_code == 0, result.output
    index = json.loads((tmp_path / "cn" / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionXLControlNetPipeline"
    family = load_family(make_cn_config(base_model=str(tmp_path / "cn")))
    pipe = StableDiffusionXLControlNetPipeline.from_pretrained(tmp_path / "cn")
    for name, weight in pipe.controlnet.state_dict().items():
        assert torch.equal(family.denoiser.state_dict()[name], weight), name
