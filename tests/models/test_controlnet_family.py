"""ControlNet family: control extractors, the canny-F1 convergence metric, runs, bank controls, LoRA."""

from __future__ import annotations

import pytest
import torch
from diffusers import StableDiffusionControlNetPipeline
from PIL import Image

from models.bank import KnowledgeBank
from models.captions import scan_caption_folder
from models.control import canny_edges, canny_f1, extract_control
from models.data import DatasetError
from models.families import load_family, scan_dataset
from models.lora import load_lora

from .conftest import check_exact_resume, run_with_convergence, with_random_lora, write_caption_folder

pytestmark = pytest.mark.usefixtures("one_thread")


def _squares(n=2, size=32):
    images = torch.zeros(n, 3, size, size)  # (n, 3, H, W)
    images[:, :, 8:24, 8:24] = 1.0
    images[1:, :, 4:12, 14:30] = 0.5
    return images


# --- extractors and metric ---------------------------------------------------------------------------


def test_canny_finds_the_outline_of_a_square():
    edges = canny_edges(_squares(1))[0, 0]
    assert edges[16, 7:10].sum() >= 1 and edges[16, 23:26].sum() >= 1  # left and right sides
    assert edges[16, 12:20].sum() == 0 and edges[2, :].sum() == 0  # nothing inside or far outside
    gray = extract_control(_squares(1), "grayscale")
    assert gray.shape == (1, 3, 32, 32) and torch.allclose(gray[0, 0, 16, 16], torch.tensor(1.0))


def test_canny_f1_scores_a_copy_near_1_and_noise_near_0():
    images = _squares()
    controls = extract_control(images, "canny")
    assert canny_f1(images, controls) == pytest.approx(1.0)
    noise = torch.rand(images.shape, generator=torch.Generator().manual_seed(0))
    assert canny_f1(noise, controls) < 0.15
    assert canny_f1(torch.zeros_like(images), controls) == pytest.approx(0.0)


def test_size_mismatch_between_image_and_condition_is_an_error(tmp_path):
    with pytest.raises(ValueError, match=r"\(32, 32\) but conditions are \(16, 16\)"):
        canny_f1(_squares(), torch.zeros(2, 3, 16, 16))
    root = write_caption_folder(tmp_path / "d", ["a", "b"], controls=True)
    Image.new("RGB", (24, 24)).save(root / "1_control.png")
    (root / "0_control.png").unlink()
    with pytest.raises(DatasetError) as err:
        scan_caption_folder(root, resolution=16)
    assert "0_control.png: conditioning image of 0.png is missing" in str(err.value)
    assert "1_control.png: conditioning image is 24x24 but 1.png is 20x20" in str(err.value)


# --- family ------------------------------------------------------------------------------------------


@pytest.fixture
def make_cn_config(make_sd_config):
    def make(**overrides):
        return make_sd_config(**{"family": "controlnet", **overrides})

    return make


def _prepared(config, data, bank=None):
    family = load_family(config)
    dataset = scan_dataset(config, data)
    family.attach_dataset(dataset, config)
    return family, family.prepare_target(dataset, config, bank, cache_dir=None)


def test_conditions_pair_text_with_controls_and_bank_controls_are_extracted(make_cn_config, caption_folder):
    family = load_family(make_cn_config())
    bank_images = _squares(3, 16)
    latents = family.encode_images(bank_images * 2 - 1)[0]
    bank = KnowledgeBank(latents=latents, conditions=torch.tensor([0, 1, 0]))
    for extractor in ("canny", "none"):
        family, target = _prepared(make_cn_config(control_extractor=extractor), caption_folder,
                                   KnowledgeBank(bank.latents, bank.conditions.clone()))
        assert target.labels.tolist() == [[1, 0], [2, 1], [3, 2], [4, 3]] and target.mean.shape[1] == 1  # no flips
        controls = torch.stack(family.controls)
        assert controls.shape == (7, 3, 16, 16)
        assert controls[:4].amax() > 0.8  # the dataset's own (resized) control images
        bank_controls = controls[4:]
        assert bank_controls.abs().sum() == 0 if extractor == "none" else bank_controls.amax() == 1.0
    rows = family.bank_conditions(torch.tensor([[1, 2]]))
    assert rows.tolist() == [[0, 6]]  # empty prompt, control of bank image 2
    dropped = family.drop_conditions(target.labels, 1.0, torch.Generator())
    assert dropped[:, 0].tolist() == [0] * 4 and dropped[:, 1].tolist() == [0, 1, 2, 3]  # text only


def test_controls_are_extracted_when_the_dataset_has_none(make_cn_config, tmp_path):
    root = write_caption_folder(tmp_path / "d", ["a", "b"])
    family, _ = _prepared(make_cn_config(control_extractor="grayscale"), root)
    controls = torch.stack(family.controls)
    assert controls.shape == (2, 3, 16, 16)
    assert torch.equal(controls[:, 0], controls[:, 1])  # gray: equal channels
    with pytest.raises(DatasetError, match="no conditioning_file_name"):
        scan_dataset(make_cn_config(control_extractor="none"), root)


def test_controlnet_run_records_convergence_and_exports_a_pipeline(make_cn_config, caption_folder, tmp_path):
    config, last, evaluation = run_with_convergence(make_cn_config(), caption_folder, tmp_path)
    assert evaluation["converged_at_step"] == (1 if evaluation["history"][0][1] >= 0.01 else 2)
    with Image.open(tmp_path / "r" / "samples" / "step_0000002.png") as grid:
        assert grid.size == (2 + 2 * 34, 2 + 2 * 18)  # 4 pairs (condition | generated) in a 2x2 grid
    pipe = StableDiffusionControlNetPipeline.from_pretrained(last, safety_checker=None, requires_safety_checker=False)
    out = pipe(["a cat"], image=torch.rand(1, 3, 16, 16), num_inference_steps=2, height=16, width=16,
               output_type="np").images
    assert out.shape == (1, 16, 16, 3)
    resumed = load_family(config.model_copy(update={"base_model": str(last)}))
    zero_conv = resumed.denoiser.controlnet_down_blocks[0].weight  # zero-initialised by from_unet
    assert zero_conv.abs().sum() > 0 and torch.equal(zero_conv, pipe.controlnet.controlnet_down_blocks[0].weight)


def test_controlnet_lora_round_trips(make_cn_config, caption_folder, tmp_path):
    config = make_cn_config(peft="lora", lora_rank=2)
    family, target = _prepared(config, caption_folder)
    model = family.denoiser
    with_random_lora(model, config)
    with torch.no_grad():
        cond = target.labels[:2]
        x, t = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0)), torch.tensor([5, 600])
        tuned = family.predict(model, x, t, cond)
        family.save_pretrained(model, tmp_path / "ck")
        fresh = load_family(config.model_copy(update={"base_model": str(tmp_path / "ck")}))
        load_lora(fresh.denoiser, tmp_path / "ck" / "lora")
        assert torch.allclose(family.predict(fresh.denoiser, x, t, cond), tuned, atol=1e-5)


def test_controlnet_resume_is_exact_and_keeps_the_convergence_record(make_cn_config, caption_folder, tmp_path):
    config = make_cn_config(max_steps=4, checkpoint_every=2, eval_every=2, label_dropout=0.3,
                            convergence_threshold=1e-6)
    resumed = check_exact_resume(config, caption_folder, tmp_path, stop_at=2)
    record = resumed.evaluation_at_resume
    assert record["converged_at_step"] == 2 and [s for s, _ in record["history"]] == [2]


def test_cli_samples_sd_and_controlnet_checkpoints(tiny_sd, tmp_path):
    from typer.testing import CliRunner

    from cli.main import app

    runner = CliRunner()
    base = ["sample", "--steps", "2", "--device", "cpu", "--prompt", "a cat", "--prompt", "a dog"]
    result = runner.invoke(app, [*base, str(tiny_sd), "--out", str(tmp_path / "sd.png")])
    assert result.exit_code == 0, result.output
    with Image.open(tmp_path / "sd.png") as grid:
        assert grid.size == (2 + 2 * 18, 2 + 18)
    assert runner.invoke(app, ["tiny", "sd", str(tmp_path / "cn"), "--controlnet"]).exit_code == 0
    refused = runner.invoke(app, [*base, str(tmp_path / "cn")])
    assert refused.exit_code == 2 and "needs --control IMAGE" in refused.output
    Image.new("RGB", (20, 20), (255, 255, 255)).save(tmp_path / "edges.png")
    result = runner.invoke(app, [*base, str(tmp_path / "cn"), "--control", str(tmp_path / "edges.png"),
                                 "--out", str(tmp_path / "cn.png")])
    assert result.exit_code == 0, result.output
    with Image.open(tmp_path / "cn.png") as grid:
        assert grid.size == (2 + 2 * 34, 2 + 18)  # two (condition | generated) pairs
