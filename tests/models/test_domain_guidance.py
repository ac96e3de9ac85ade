"""Domain Guidance: the unconditional branch from the pre-trained base, ε_base + w·(ε_tuned − ε_base), in
validation grids (full: a kept host copy; LoRA: adapters off; ControlNet: its frozen UNet) and in
``difftune sample``; Flux, guidance-distilled, refuses it."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from cli.main import app
from contract.train_config import ConfigError
from models import checkpoints as ckpt
from models.domain_guidance import WithoutAdapters
from models.families import load_family

from .conftest import build_trainer, with_random_lora

pytestmark = pytest.mark.usefixtures("one_thread")
runner = CliRunner()


def test_the_unconditional_branch_comes_from_the_base(make_config):
    family = load_family(make_config())
    tuned = copy.deepcopy(family.denoiser)
    with torch.no_grad():
        for p in tuned.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x, t, labels = torch.randn(2, 4, 8, 8), torch.tensor([500, 500]), torch.tensor([1, 3])
    null = torch.full_like(labels, family.null_label)
    with torch.no_grad():
        guided = family._predict_fn(tuned, labels, family.null_label, 4.0, base=family.denoiser)(x, t)
        cfg = family._predict_fn(tuned, labels, family.null_label, 4.0)(x, t)
        e_tuned, e_base = family.predict(tuned, x, t, labels), family.predict(family.denoiser, x, t, null)
        e_uncond = family.predict(tuned, x, t, null)
    assert torch.allclose(guided, e_base + 4.0 * (e_tuned - e_base), atol=1e-6)
    assert torch.allclose(cfg, e_uncond + 4.0 * (e_tuned - e_uncond), atol=1e-6)


def test_without_adapters_is_the_base_and_leaves_them_on(make_config):
    family = load_family(make_config())
    model = family.denoiser
    x, t, labels = torch.randn(1, 4, 8, 8), torch.tensor([300]), torch.tensor([2])
    with torch.no_grad():
        before = model(x, timestep=t, class_labels=labels).sample
        with_random_lora(model, make_config(peft="lora"))
        tuned = model(x, timestep=t, class_labels=labels).sample
        base = WithoutAdapters(model)(x, timestep=t, class_labels=labels).sample
        again = model(x, timestep=t, class_labels=labels).sample
    assert torch.allclose(base, before, atol=1e-6) and not torch.allclose(tuned, before)
    assert torch.equal(again, tuned)


@pytest.mark.parametrize("peft", ["full", "lora"])
def test_validation_grids_are_guided_by_the_base(peft, make_config, image_folder, tmp_path):
    config = make_config(peft=peft, max_steps=2, sample_every=2, learning_rate=5e-2, guidance_mode="domain")
    trainer = build_trainer(config, image_folder, tmp_path / "dg", tmp_path / "c")
    assert (trainer.kept_base.copy is None) == (peft == "lora")  # LoRA: the adapters switch off, nothing kept
    if trainer.kept_base.copy is not None:
        assert next(trainer.kept_base.copy.parameters()).device.type == "cpu"
    trainer.fit()
    plain = build_trainer(config.model_copy(update={"guidance_mode": "cfg"}), image_folder, tmp_path / "cfg",
                          tmp_path / "c")
    plain.fit()
    with Image.open(tmp_path / "dg" / "samples" / "step_0000002.png") as a, \
            Image.open(tmp_path / "cfg" / "samples" / "step_0000002.png") as b:
        assert a.size == b.size and not np.array_equal(np.asarray(a), np.asarray(b))


def test_a_controlnet_is_guided_by_its_own_frozen_unet(make_sd_config):
    family = load_family(make_sd_config(family="controlnet"))
    assert family.pretrained_denoiser() is family.unet


def test_sample_with_domain_guidance_from_a_checkpoint(make_config, image_folder, tmp_path):
    config = make_config(max_steps=2, sample_every=2, checkpoint_every=2, learning_rate=5e-2)
    build_trainer(config, image_folder, tmp_path / "run", tmp_path / "c").fit()
    checkpoint = ckpt.latest_checkpoint(tmp_path / "run")
    args = ["sample", str(checkpoint), "--labels", "0,1", "--steps", "2", "--device", "cpu"]
    assert runner.invoke(app, [*args, "--out", str(tmp_path / "cfg.png")]).exit_code == 0
    result = runner.invoke(app, [*args, "--guidance-mode", "domain", "--out", str(tmp_path / "dg.png")])
    assert result.exit_code == 0, result.output  # the base comes from the checkpoint's meta.json
    with Image.open(tmp_path / "dg.png") as a, Image.open(tmp_path / "cfg.png") as b:
        assert not np.array_equal(np.asarray(a), np.asarray(b))
    missing = runner.invoke(app, [*args, "--guidance-mode", "domain", "--base", str(tmp_path / "nowhere")])
    assert missing.exit_code == 2 and "base: cannot load" in missing.output


def test_flux_refuses_domain_guidance(make_family_config):
    with pytest.raises(ConfigError, match="guidance_mode: flux is guidance-distilled"):
        make_family_config("flux", guidance_mode="domain")


def test_the_transfer_benchmark_can_score_samples_guided_by_the_base(make_config):
    from models.evaluation.sample_quality import Evaluator

    base, tuned = load_family(make_config()), load_family(make_config())
    with torch.no_grad():
        for p in tuned.denoiser.parameters():
            p.add_(0.05 * torch.randn_like(p))
    options = dict(classifier=None, real_features=None, num_classes=2, per_class=1, sample_steps=2, base=base)
    domain, cfg = Evaluator(**options, guidance_mode="domain"), Evaluator(**options)
    assert not torch.equal(domain.sample(tuned, 4.0, 0), cfg.sample(tuned, 4.0, 0))
    assert torch.equal(domain.sample(tuned, 1.0, 0), cfg.sample(tuned, 1.0, 0))  # w = 1: the conditional branch only
    assert torch.equal(domain.sample(base, 4.0, 0), cfg.sample(base, 4.0, 0))  # the base itself: plain CFG
