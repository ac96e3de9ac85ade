"""Knowledge bank: cached per base model and settings, resumable shard by shard."""

from __future__ import annotations

import pytest
import torch

from models.bank import bank_key, build_bank
from models.families import load_family


class CountingFamily:
    """Wraps a family and counts (or interrupts) bank batch generation."""

    def __init__(self, family, fail_after: int | None = None):
        self.family, self.calls, self.fail_after = family, 0, fail_after

    def __getattr__(self, name):
        return getattr(self.family, name)

    def generate_bank_batch(self, n, config, generator, *, size=None):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt("interrupted")
        self.calls += 1
        return self.family.generate_bank_batch(n, config, generator)


def test_bank_is_cached_and_reused(make_config, tmp_path):
    config = make_config(bank={"size": 10, "batch_size": 4, "num_inference_steps": 2})
    first = CountingFamily(load_family(config))
    bank = build_bank(first, config, tmp_path)
    assert first.calls == 3 and bank.latents.shape == (10, 4, 8, 8) and bank.conditions.shape == (10,)
    second = CountingFamily(load_family(config))
    again = build_bank(second, config, tmp_path)
    assert second.calls == 0 and torch.equal(bank.latents, again.latents)
    folder = tmp_path / "banks" / bank_key(first, config.bank)
    assert sorted(p.name for p in folder.iterdir()) == ["bank.safetensors", "meta.json"]


def test_interrupted_bank_resumes_to_the_same_content(make_config, tmp_path):
    config = make_config(bank={"size": 10, "batch_size": 4, "num_inference_steps": 2})
    reference = build_bank(load_family(config), config, tmp_path / "ref")
    interrupted = CountingFamily(load_family(config), fail_after=2)
    with pytest.raises(KeyboardInterrupt):
        build_bank(interrupted, config, tmp_path / "run")
    resumed = CountingFamily(load_family(config))
    bank = build_bank(resumed, config, tmp_path / "run")
    assert resumed.calls == 1  # only the missing third shard
    assert torch.equal(bank.latents, reference.latents)
    assert torch.equal(bank.conditions, reference.conditions)


def test_key_changes_with_settings_and_base_model(make_config, tmp_path):
    from models.tiny import build_tiny_dit_pipeline

    config = make_config()
    family = load_family(config)
    key = bank_key(family, config.bank)
    assert key == bank_key(load_family(config), config.bank)  # stable across loads of the same weights
    keys = {
        key,
        bank_key(family, config.bank.model_copy(update={"seed": 1})),
        bank_key(family, config.bank.model_copy(update={"guidance_scale": 4.0})),
        bank_key(family, config.bank.model_copy(update={"size": 11})),
        bank_key(family, config.bank.model_copy(update={"num_inference_steps": 7})),
        bank_key(family, config.bank.model_copy(update={"sampler": "ddpm"})),
    }
    assert len(keys) == 6
    other_base = build_tiny_dit_pipeline(tmp_path / "other", seed=1, resolution=16)
    other = load_family(config.model_copy(update={"base_model": str(other_base)}))
    assert bank_key(other, config.bank) not in keys  # other weights, same settings: another bank
    with torch.no_grad():  # tuning the loaded model does not change which bank it was built from
        next(family.denoiser.parameters()).add_(1.0)
    assert bank_key(family, config.bank) == key
