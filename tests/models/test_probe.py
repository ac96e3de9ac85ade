"""The chain-of-forgetting probe's swap logic on tiny random models (exact equality at the ends)."""

from __future__ import annotations

import pytest
import torch

from models.families.dit import DiTFamily
from models.probe import swap_grid, swap_sample
from models.tiny import build_tiny_dit_pipeline


@pytest.fixture(scope="module")
def pair(tiny_base, tmp_path_factory):
    """(base, tuned): two different random tiny DiTs of the same shape; the tuned one has 3 classes."""
    tuned_dir = build_tiny_dit_pipeline(tmp_path_factory.mktemp("tuned") / "dit", seed=1, num_classes=3)
    return DiTFamily.from_pretrained(str(tiny_base)), DiTFamily.from_pretrained(str(tuned_dir))


def _alone(family: DiTFamily, labels: torch.Tensor, guidance: float) -> torch.Tensor:
    return family.sample_latents(family.denoiser.eval(), labels, null=family.null_label, guidance=guidance,
                                 steps=4, sampler="ddim", generator=torch.Generator().manual_seed(7))


def _swap(first, second, labels, t_star, guidance):
    return swap_sample(first, second, labels, t_star, guidance=guidance, steps=4,
                       generator=torch.Generator().manual_seed(7))


@pytest.mark.parametrize("guidance", [1.0, 2.0])
def test_swap_at_the_ends_equals_one_model_alone(pair, guidance):
    base, tuned = pair
    labels = torch.tensor([0, 1, 2, 1])
    tuned_alone, base_alone = _alone(tuned, labels, guidance), _alone(base, labels, guidance)
    assert not torch.equal(tuned_alone, base_alone)
    T = tuned.num_timesteps
    assert torch.equal(_swap(tuned, base, labels, 0, guidance), tuned_alone)  # tuned→base, t* = 0
    assert torch.equal(_swap(tuned, base, labels, T, guidance), base_alone)  # tuned→base, t* = T
    assert torch.equal(_swap(base, tuned, labels, 0, guidance), base_alone)  # base→tuned mirrors it
    assert torch.equal(_swap(base, tuned, labels, T, guidance), tuned_alone)


def test_swap_in_the_middle_uses_both_models(pair):
    base, tuned = pair
    labels = torch.tensor([0, 2])
    middle = _swap(tuned, base, labels, 500, 1.0)  # DDIM(4): t = 750, 500 tuned; 250, 0 base
    assert not torch.equal(middle, _alone(tuned, labels, 1.0))
    assert not torch.equal(middle, _alone(base, labels, 1.0))


def test_swap_grid_spans_the_schedule():
    assert swap_grid(1000, 5) == [0, 250, 500, 750, 1000]
    assert swap_grid(1000, 2) == [0, 1000]


@pytest.mark.parametrize("merge", [False, True])
def test_probe_loads_a_lora_checkpoint_as_the_tuned_model(make_config, tmp_path, merge):
    """An unmerged adapter is attached (else the probe would compare the base with itself); a merged
    one is not applied twice."""
    from models.families import load_family
    from models.probe import load_tuned

    from .conftest import with_random_lora

    config = make_config(peft="lora", lora_rank=2, lora_merge=merge)
    family = load_family(config)
    with_random_lora(family.denoiser, config)
    x, t, y = torch.randn(2, 4, 8, 8), torch.tensor([3, 900]), torch.tensor([0, 1])
    with torch.no_grad():
        tuned = family.predict(family.denoiser, x, t, y)
        family.save_pretrained(family.denoiser, tmp_path / "ck")
        loaded = load_tuned(tmp_path / "ck")
        assert torch.allclose(loaded.predict(loaded.denoiser, x, t, y), tuned, atol=1e-5)
        base = load_family(make_config())
        assert not torch.allclose(base.predict(base.denoiser, x, t, y), tuned, atol=1e-3)
