"""Memory savers as TrainConfig options: each trains, checkpoints and resumes bit for bit, and the
checkpoint is still a full-precision diffusers pipeline."""

from __future__ import annotations

import pytest
import torch

from contract.train_config import ConfigError, parse_config

from .conftest import build_trainer, check_exact_resume, pipeline_class

pytestmark = pytest.mark.usefixtures("one_thread")


def test_8bit_adamw_keeps_its_moments_in_8_bits_and_resumes_exactly(make_config, image_folder, tmp_path):
    config = make_config(optimizer="adamw_8bit")
    trainer = check_exact_resume(config, image_folder, tmp_path, stop_at=2)
    assert type(trainer.optimizer).__module__.startswith("bitsandbytes")
    dtypes = {v.dtype for state in trainer.optimizer.state.values() for v in state.values() if torch.is_tensor(v)}
    assert torch.uint8 in dtypes  # the large matrices' moments are quantised


def test_cpu_ema_lives_in_host_memory_and_resumes_exactly(make_config, image_folder, tmp_path):
    trainer = check_exact_resume(make_config(ema_device="cpu"), image_folder, tmp_path, stop_at=2)
    assert {s.device.type for s in trainer.ema.shadow} == {"cpu"}
    assert all(s.dtype == torch.float32 for s in trainer.ema.shadow)


@pytest.mark.parametrize(("family", "peft"), [("dit", "difffit"), ("sd", "lora"), ("flux", "lora")])
def test_a_bf16_base_trains_resumes_and_exports_fp32(make_config, make_family_config, image_folder, caption_folder,
                                                     tmp_path, family, peft):
    savers = dict(peft=peft, base_precision="bf16", mixed_precision="bf16")
    config = make_config(**savers) if family == "dit" else make_family_config(family, **savers)
    data = image_folder if family == "dit" else caption_folder
    # bf16 UNet/MMDiT kernels on this CPU differ in the last bits between two fresh runs (the DiT's do not)
    trainer = check_exact_resume(config, data, tmp_path, stop_at=2, rel=0.0 if family == "dit" else 2e-3)
    frozen = [p for p in trainer.module.parameters() if not p.requires_grad]
    trained = [p for p in trainer.module.parameters() if p.requires_grad]
    assert frozen and {p.dtype for p in frozen} == {torch.bfloat16} and {p.dtype for p in trained} == {torch.float32}
    if family != "dit":  # the checkpoint is an ordinary fp32 pipeline
        checkpoint = trainer.save_checkpoint()
        pipe = pipeline_class(family).from_pretrained(checkpoint)
        net = getattr(pipe, trainer.family.denoiser_part)
        assert {p.dtype for p in net.parameters()} == {torch.float32}


def test_a_bf16_base_needs_bf16_compute(make_config, image_folder, tmp_path):
    with pytest.raises(ConfigError, match="base_precision: only peft lora or difffit"):
        parse_config({"peft": "full", "base_precision": "bf16"})
    with pytest.raises(ConfigError, match="base_precision: a bf16 base needs bf16 compute"):
        parse_config({"peft": "lora", "base_precision": "bf16", "mixed_precision": "no"})
    # mixed_precision auto computes in fp32 on the CPU: refused before any step, naming the fix
    with pytest.raises(ValueError, match="set mixed_precision: bf16"):
        build_trainer(make_config(peft="lora", base_precision="bf16"), image_folder, tmp_path / "o", tmp_path / "c")


@pytest.mark.parametrize("family", ["sdxl", "flux"])
def test_text_encoders_in_host_memory_still_encode_the_bank_and_samples(make_family_config, caption_folder, tmp_path,
                                                                       family):
    config = make_family_config(family, text_encoder_device="cpu", max_steps=2, sample_every=2)
    trainer = build_trainer(config, caption_folder, tmp_path / "o", tmp_path / "c")
    fam = trainer.family
    assert fam.text_device == torch.device("cpu")
    assert {p.device.type for enc in fam.text_encoders() for p in enc.parameters()} == {"cpu"}
    result = trainer.fit()
    assert result.step == 2 and (tmp_path / "o" / "samples" / "step_0000002.png").exists()
    with pytest.raises(ConfigError, match="text_encoder_device: dit has no text encoders"):
        parse_config({"text_encoder_device": "cpu"})


@pytest.mark.parametrize("family", ["dit", "sd", "controlnet", "sdxl", "sd3", "flux"])
def test_gradient_checkpointing_recomputes_the_same_steps(make_config, make_sd_config, make_family_config,
                                                          image_folder, caption_folder, tmp_path, family):
    """Every family's denoiser checkpoints its blocks (diffusers' own switch) and trains the same steps."""
    def losses(checkpointing: bool) -> tuple[list[float], bool]:
        overrides = dict(gradient_checkpointing=checkpointing)
        if family == "dit":
            config, data = make_config(**overrides), image_folder
        elif family == "controlnet":
            config, data = make_sd_config(family="controlnet", **overrides), caption_folder
        else:
            config, data = make_family_config(family, **overrides), caption_folder
        trainer = build_trainer(config, data, tmp_path / f"o{checkpointing}", tmp_path / "c")
        return [trainer.train_step()["loss"].item() for _ in range(2)], trainer.module.is_gradient_checkpointing

    plain, off = losses(False)
    recomputed, on = losses(True)
    assert on and not off
    assert recomputed == pytest.approx(plain, rel=1e-5)
