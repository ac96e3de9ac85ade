"""``difftune plan``: one real step of the run, its memory by part, and whether it fits."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from cli.main import app
from models.plan import plan_memory

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_parts_follow_the_savers(make_config, image_folder, tmp_path):
    full = plan_memory(make_config(), image_folder, device="cpu", cache_dir=tmp_path / "c").parts
    params = full["weights_trained"]
    assert full["gradients"] == params and full["ema"] == params
    assert full["optimizer"] >= 2 * params  # AdamW: two fp32 moments per trained weight
    assert full["weights_frozen"] == 0 and full["activations"] > 0

    lora = plan_memory(make_config(peft="lora", base_precision="bf16", mixed_precision="bf16",
                                   optimizer="adamw_8bit"), image_folder, device="cpu", cache_dir=tmp_path / "c").parts
    assert lora["weights_trained"] < params / 10 and lora["ema"] == lora["weights_trained"]
    assert lora["weights_frozen"] == pytest.approx(params / 2, rel=0.05)  # the base in bf16

    bigger = plan_memory(make_config(batch_size=16), image_folder, device="cpu", cache_dir=tmp_path / "c").parts
    assert bigger["activations"] == pytest.approx(2 * full["activations"], rel=0.1)  # they scale with the batch
    halved = plan_memory(make_config(batch_size=16), image_folder, device="cpu", cache_dir=tmp_path / "c",
                         processes=2).parts
    assert halved["activations"] == pytest.approx(full["activations"], rel=0.01)  # each process gets 8 rows


def test_checkpointing_keeps_fewer_activations(make_family_config, caption_folder, tmp_path):
    plain = plan_memory(make_family_config("sdxl"), caption_folder, device="cpu", cache_dir=tmp_path / "c")
    lean = plan_memory(make_family_config("sdxl", gradient_checkpointing=True), caption_folder, device="cpu",
                       cache_dir=tmp_path / "c")
    assert lean.parts["activations"] < 0.7 * plain.parts["activations"]
    assert plain.parts["text_encoders"] > 0 and plain.parts["vae_and_frozen_parts"] > 0


def test_the_cli_prints_the_plan_and_refuses_what_does_not_fit(tiny_base, image_folder, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(dict(base_model=str(tiny_base), resolution=16, batch_size=8)))
    args = ["plan", str(config), "--data", str(image_folder), "--device", "cpu", "--cache-dir", str(tmp_path / "c")]
    ok = CliRunner().invoke(app, [*args, "--gpu-memory", "80"])
    assert ok.exit_code == 0, ok.output
    plan = json.loads(ok.output)
    assert plan["fits"] is True and plan["batch_per_process"] == 8 and plan["parts_gb"]["activations"] > 0
    tight = CliRunner().invoke(app, [*args, "--gpu-memory", "0.0001"])
    assert tight.exit_code == 3
    assert "does not fit" in tight.output and "gradient_checkpointing: true" in tight.output
    odd = CliRunner().invoke(app, [*args, "--gpus", "3"])
    assert odd.exit_code != 0 and "batch_size: 8 is not divisible by 3" in odd.output


def test_a_base_in_fp8_or_nf4_is_counted_as_held(make_family_config, tiny_pipeline, caption_folder, tmp_path):
    """fp8: one byte per weight of the layers it stores (two for the rest, in bf16); nf4: half a byte per
    4-bit weight plus the layers' quantisation statistics."""
    import torch
    from diffusers import UNet2DConditionModel

    from models.memory_savers import NF4_BLOCKS, fp8_layers, quant_state_bytes, quantise_nf4

    def frozen(precision: str) -> int:
        config = make_family_config("sd", peft="lora", base_precision=precision, mixed_precision="bf16",
                                    gradient_checkpointing=True)
        return plan_memory(config, caption_folder, device="cpu", cache_dir=tmp_path / "c").parts["weights_frozen"]

    unet = UNet2DConditionModel.from_pretrained(tiny_pipeline("sd"), subfolder="unet").requires_grad_(False)
    total = sum(p.numel() for p in unet.parameters())
    in_fp8 = sum(p.numel() for layer in fp8_layers(unet) for p in layer.parameters(recurse=False))
    assert frozen("fp8") == in_fp8 + 2 * (total - in_fp8)

    in_4bit = sum(m.weight.numel() for name, m in unet.named_modules()
                  if type(m) is torch.nn.Linear and NF4_BLOCKS.search(name + "."))
    layers = quantise_nf4(unet)
    statistics = quant_state_bytes(unet)
    assert 0 < statistics < layers * 2048 + in_4bit / 32  # code tables per layer, ~1/64 byte per weight
    assert frozen("nf4") == in_4bit // 2 + 2 * (total - in_4bit) + statistics
