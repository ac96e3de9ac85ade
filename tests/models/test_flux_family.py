"""Flux.1 on the tiny offline pipeline: the resolution-dependent σ shift, 2×2 packing around the
transformer, the embedded (distilled) guidance and sampling without classifier-free guidance."""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import FluxPipeline
from diffusers.pipelines.flux.pipeline_flux import calculate_shift

from models.families import load_family
from models.flow_matching import shift_sigmas

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def make_flux(make_family_config):
    """``make(**overrides)``: (the Flux family on the tiny pipeline, its config)."""
    def make(**overrides):
        config = make_family_config("flux", **overrides)
        return load_family(config), config

    return make


def capture_calls(module: torch.nn.Module) -> tuple[list[dict], torch.utils.hooks.RemovableHandle]:
    """Record the keyword arguments of every forward call of ``module``."""
    calls: list[dict] = []
    handle = module.register_forward_pre_hook(lambda _m, _args, kwargs: calls.append(kwargs), with_kwargs=True)
    return calls, handle


def test_native_shift_follows_the_packed_sequence_length(make_flux):
    shifts = {}
    for resolution, seq_len in ((16, 16), (64, 256)):  # VAE factor 2, 2×2 patches: (R/4)² tokens
        family, _ = make_flux(resolution=resolution)
        cfg = family.scheduler_config
        mu = calculate_shift(seq_len, cfg["base_image_seq_len"], cfg["max_image_seq_len"], cfg["base_shift"],
                             cfg["max_shift"])
        shifts[resolution] = family.native_density().shift
        assert shifts[resolution] == pytest.approx(math.exp(mu))
        assert family.metadata()["native_shift"] == pytest.approx(math.exp(mu))
        steps = 4  # the sampler's σ: the pipeline's linspace under the same shift
        expected = shift_sigmas(torch.linspace(1.0, 1 / steps, steps, dtype=torch.float64), shifts[resolution])
        assert torch.allclose(family.inference_scheduler("ddim", steps).sigmas[:-1].double(), expected, atol=1e-5)
    assert shifts[64] > shifts[16] > 1.0


def test_a_static_shift_scheduler_keeps_its_shift(make_flux):
    family, _ = make_flux()
    family.scheduler_config = {**family.scheduler_config, "use_dynamic_shifting": False}
    assert family.native_density().shift == family.scheduler_config["shift"] == 3.0
    expected = shift_sigmas(torch.linspace(1.0, 1 / 3, 3, dtype=torch.float64), 3.0)
    assert torch.allclose(family.inference_scheduler("ddim", 3).sigmas[:-1].double(), expected, atol=1e-5)


def test_predict_packs_calls_the_transformer_and_unpacks(make_flux):
    family, _ = make_flux()
    family.text_table = family.prompt_table(["", "a red cat"], None)
    n, (c, h, w) = 2, family.latent_shape
    x = torch.randn(n, c, h, w, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([900.0, 250.0])  # σ·1000
    packed = FluxPipeline._pack_latents(x, n, c, h, w)  # (N, h/2·w/2, 4C)
    assert torch.equal(FluxPipeline._unpack_latents(packed, h, w, 1), x)
    patches = x.reshape(n, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(n, h * w // 4, 4 * c)
    assert torch.equal(packed, patches)
    rows, cols = torch.meshgrid(torch.arange(h // 2), torch.arange(w // 2), indexing="ij")
    img_ids = torch.stack([torch.zeros_like(rows), rows, cols], -1).reshape(-1, 3).float()  # (h/2·w/2, 3)
    emb = family.embeddings(torch.tensor([0, 1]))
    with torch.no_grad():
        got = family.predict(family.denoiser, x, t, torch.tensor([0, 1]))
        direct = family.transformer(hidden_states=patches, timestep=t / 1000, guidance=torch.full((n,), 3.5),
                                    pooled_projections=emb["pooled"], encoder_hidden_states=emb["embeds"],
                                    txt_ids=torch.zeros(emb["embeds"].shape[1], 3), img_ids=img_ids).sample
    assert got.shape == x.shape
    unpacked = direct.reshape(n, h // 2, w // 2, c, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(n, c, h, w)
    assert torch.allclose(got, unpacked, atol=1e-6)


def test_the_distilled_guidance_reaches_the_transformer(make_flux):
    family, _ = make_flux(distilled_guidance=5.0)
    family.text_table = family.prompt_table(["", "a red cat"], None)
    x, t, ids = torch.randn(3, *family.latent_shape), torch.tensor([100.0, 500.0, 900.0]), torch.tensor([1, 0, 1])
    calls, handle = capture_calls(family.transformer)
    with torch.no_grad():
        at_five = family.predict(family.denoiser, x, t, ids)
        family.distilled_guidance = 1.0
        at_one = family.predict(family.denoiser, x, t, ids)
    handle.remove()
    assert torch.equal(calls[0]["guidance"], torch.full((3,), 5.0))
    assert torch.equal(calls[1]["guidance"], torch.full((3,), 1.0))
    assert not torch.allclose(at_five, at_one)  # the embedding changes the velocity
    assert family.metadata()["distilled_guidance"] == 1.0


def test_sampling_runs_one_conditional_call_per_step(make_flux):
    family, config = make_flux(validation_prompts=["a red cat", "a yak"], validation_guidance_scale=7.0,
                               sample_steps=3)
    calls, handle = capture_calls(family.transformer)
    images = family.sample_grid(family.denoiser, config, torch.Generator().manual_seed(0))
    assert images.shape == (2, 3, 16, 16)
    assert len(calls) == config.sample_steps and all(len(c["hidden_states"]) == 2 for c in calls)
    assert all(torch.equal(c["guidance"], torch.full((2,), config.distilled_guidance)) for c in calls)
    calls.clear()
    family.generate_bank_batch(2, config, torch.Generator().manual_seed(0))
    handle.remove()
    assert len(calls) == config.bank.num_inference_steps


def test_samples_match_the_flux_pipeline(make_flux):
    """The family's sampler (CFG scale ignored) gives FluxPipeline's image for the same seed and guidance."""
    family, config = make_flux(distilled_guidance=4.0)
    ours = family.generate_images(family.denoiser, ["a red cat"], guidance=7.0, steps=3,
                                  generator=torch.Generator().manual_seed(0))  # (1, 3, 16, 16)
    pipe = FluxPipeline.from_pretrained(config.base_model)
    theirs = pipe("a red cat", num_inference_steps=3, height=16, width=16, guidance_scale=4.0,
                  max_sequence_length=config.max_sequence_length, output_type="pt",
                  generator=torch.Generator().manual_seed(0)).images
    assert torch.allclose(ours, theirs, atol=1e-5)
