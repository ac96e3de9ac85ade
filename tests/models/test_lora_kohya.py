"""LoRA in kohya's format (what AUTOMATIC1111 and ComfyUI users load): the same adapter as the
diffusers file, diffusers' own kohya loaders read it, and the config refuses it where no such format exists."""

from __future__ import annotations

import re

import pytest
import torch
from peft import get_peft_model_state_dict
from peft.tuners.lora import LoraLayer
from safetensors import safe_open
from safetensors.torch import load_file

from contract.families import family as family_spec
from contract.train_config import ConfigError, parse_config
from models.families import load_family
from models.lora_kohya import KOHYA_WEIGHTS, from_kohya, to_kohya

from .conftest import example_inputs, pipeline_class, with_random_lora

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("family", ["sd", "sdxl", "sd3", "flux"])
def test_the_kohya_file_holds_the_adapter_and_diffusers_loads_it(make_family_config, tmp_path, family):
    config = make_family_config(family, peft="lora", lora_rank=2, lora_alpha=4.0, lora_format="kohya")
    fam = load_family(config)
    model = fam.denoiser
    x, t, cond = example_inputs(fam, config)
    with torch.no_grad():
        base = fam.predict(model, x, t, cond)
    with_random_lora(model, config)
    with torch.no_grad():
        tuned = fam.predict(model, x, t, cond)
    assert not torch.allclose(tuned, base, atol=1e-4)
    fam.save_pretrained(model, tmp_path / "ck")
    folder = tmp_path / "ck" / "lora"

    prefix = family_spec(family).kohya_prefix
    kohya = load_file(folder / KOHYA_WEIGHTS)
    assert all(re.fullmatch(rf"{prefix}_\w+\.(lora_down\.weight|lora_up\.weight|alpha)", k) for k in kohya)
    assert any(k.endswith("attn1_to_q.lora_down.weight" if prefix == "lora_unet" else "attn_to_q.lora_down.weight")
               for k in kohya)
    adapted = [name for name, module in model.named_modules() if isinstance(module, LoraLayer)]
    state, alpha = from_kohya(kohya, prefix, adapted)
    expected = get_peft_model_state_dict(model)
    assert alpha == 4.0 and state.keys() == expected.keys()
    assert all(torch.equal(state[k], expected[k].float()) for k in expected)
    with safe_open(folder / KOHYA_WEIGHTS, "pt") as f:
        meta = f.metadata()
    assert meta["ss_network_dim"] == "2" and meta["ss_network_alpha"] == "4.0"

    if family == "sd3":
        return  # diffusers' SD3 loader reads only its own format; ComfyUI maps lora_transformer_* (OneTrainer's keys)
    pipe = pipeline_class(family).from_pretrained(tmp_path / "ck")
    pipe.load_lora_weights(folder, weight_name=KOHYA_WEIGHTS)
    with torch.no_grad():
        assert torch.allclose(fam.predict(getattr(pipe, fam.denoiser_part), x, t, cond), tuned, atol=1e-5)


def test_a_default_lora_folder_still_loads_beside_the_kohya_file(make_family_config, tmp_path):
    """Two .safetensors in lora/: diffusers' loader still picks its own file when none is named."""
    config = make_family_config("sdxl", peft="lora", lora_rank=2, lora_format="kohya")
    fam = load_family(config)
    with_random_lora(fam.denoiser, config)
    x, t, cond = example_inputs(fam, config)
    with torch.no_grad():
        tuned = fam.predict(fam.denoiser, x, t, cond)
    fam.save_pretrained(fam.denoiser, tmp_path / "ck")
    pipe = pipeline_class("sdxl").from_pretrained(tmp_path / "ck")
    pipe.load_lora_weights(tmp_path / "ck" / "lora")
    with torch.no_grad():
        assert torch.allclose(fam.predict(pipe.unet, x, t, cond), tuned, atol=1e-5)


def test_keys_round_trip_through_module_names_with_underscores():
    peft_state = {"down_blocks.0.attn1.to_q.lora_A.weight": torch.ones(2, 3),
                  "down_blocks.0.attn1.to_q.lora_B.weight": torch.zeros(3, 2)}
    kohya = to_kohya(peft_state, "lora_unet", alpha=1.0)
    assert set(kohya) == {"lora_unet_down_blocks_0_attn1_to_q.lora_down.weight",
                          "lora_unet_down_blocks_0_attn1_to_q.lora_up.weight", "lora_unet_down_blocks_0_attn1_to_q.alpha"}
    back, alpha = from_kohya(kohya, "lora_unet", ["down_blocks.0.attn1.to_q", "down_blocks.0.attn1"])
    assert alpha == 1.0 and back.keys() == peft_state.keys()
    with pytest.raises(ValueError, match="names no module"):
        from_kohya(kohya, "lora_unet", ["up_blocks.0.attn1.to_q"])
    with pytest.raises(ValueError, match="no kohya equivalent"):
        to_kohya({"x.lora_magnitude_vector": torch.ones(1)}, "lora_unet", 1.0)


@pytest.mark.parametrize(("overrides", "why"), [
    (dict(family="sd", peft="full"), "peft: full"),
    (dict(family="dit", peft="lora", num_classes=2), "family: dit"),
    (dict(family="controlnet", peft="lora"), "family: controlnet"),
])
def test_kohya_format_is_refused_where_it_does_not_exist(overrides, why):
    with pytest.raises(ConfigError, match=rf"lora_format: .*{why}"):
        parse_config({**overrides, "lora_format": "kohya"})
