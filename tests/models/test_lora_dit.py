"""LoRA on DiT: only the adapter trains, it saves and loads back, and merges on request."""

from __future__ import annotations

import pytest
import torch
from diffusers import DiTPipeline

from models.families import load_family
from models.lora import load_lora
from models.run import run_training

from .conftest import with_random_lora

pytestmark = pytest.mark.usefixtures("one_thread")


def test_dit_lora_run_saves_an_adapter_that_loads_back(make_config, image_folder, tmp_path):
    config = make_config(peft="lora", lora_rank=2, max_steps=2, checkpoint_every=2, sample_every=100)
    result = run_training(config, data_dir=image_folder, out_dir=tmp_path / "r", cache_dir=tmp_path / "c")
    last = result.fit.last_checkpoint
    assert (last / "lora" / "pytorch_lora_weights.safetensors").exists()
    base = load_family(make_config())
    pipe = DiTPipeline.from_pretrained(last)
    for a, b in zip(base.denoiser.state_dict().values(), pipe.transformer.state_dict().values(), strict=True):
        assert torch.equal(a, b)  # unmerged: the pipeline keeps the base weights


@pytest.mark.parametrize("merge", [False, True])
def test_dit_lora_load_and_merge_reproduce_the_tuned_model(make_config, tmp_path, merge):
    config = make_config(peft="lora", lora_rank=2, lora_merge=merge, lora_target_modules=["to_q", "to_v", "proj_out_2"])
    family = load_family(config)
    model = family.denoiser
    with_random_lora(model, config)
    with torch.no_grad():
        x, t, y = torch.randn(2, 4, 8, 8), torch.tensor([3, 900]), torch.tensor([0, 1])
        tuned = family.predict(model, x, t, y)
        family.save_pretrained(model, tmp_path / "ck")
        saved = load_family(config.model_copy(update={"base_model": str(tmp_path / "ck")}))
        if not merge:
            load_lora(saved.denoiser, tmp_path / "ck" / "lora")
        assert torch.allclose(family.predict(saved.denoiser, x, t, y), tuned, atol=1e-5)
