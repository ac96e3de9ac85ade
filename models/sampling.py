"""Samplers shared by the families: a DDIM/DDPM loop over any denoising function, with CFG."""

from __future__ import annotations

from collections.abc import Callable

import torch
from diffusers import DDIMScheduler, DDPMScheduler

# A denoising function (x_t, t) -> model output, used by samplers; families build one per model.
PredictFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def make_sampler(kind: str, scheduler_config: dict, num_inference_steps: int):
    """A fresh inference scheduler of ``kind`` (``ddim`` | ``ddpm``) built from a training config."""
    cls = {"ddim": DDIMScheduler, "ddpm": DDPMScheduler}.get(kind)
    if cls is None:
        raise ValueError(f"sampler: unknown sampler {kind!r}")
    scheduler = cls.from_config(scheduler_config)
    scheduler.set_timesteps(num_inference_steps)
    return scheduler


def guided(predict_cond: PredictFn, predict_uncond: PredictFn, scale: float) -> PredictFn:
    """Classifier-free guidance: ε_u + s (ε_c − ε_u); with s = 1 only the conditional pass runs."""
    if scale == 1.0:
        return predict_cond

    def fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        cond, uncond = predict_cond(x, t), predict_uncond(x, t)
        return uncond + scale * (cond - uncond)

    return fn


@torch.no_grad()
def denoise(
    predict: PredictFn | Callable[[int], PredictFn],
    latents: torch.Tensor,
    scheduler,
    *,
    generator: torch.Generator | None = None,
    stop_at: int | None = None,
    per_step: bool = False,
) -> torch.Tensor:
    """Run the reverse process from ``latents`` through ``scheduler.timesteps``.

    ``predict`` maps (x_t, t) to the model output. With ``per_step`` it is instead a function of the
    integer timestep returning such a map, so a caller can switch models along the chain (the
    chain-of-forgetting probe). ``stop_at`` ends the loop before timesteps below it.
    """
    x = latents
    for t in scheduler.timesteps:
        step = int(t)
        if stop_at is not None and step < stop_at:
            break
        fn = predict(step) if per_step else predict
        t_batch = t.to(x.device).expand(x.shape[0])  # (N,): integer DDPM steps or flow-matching σ·1000
        out = fn(x, t_batch)
        kwargs = {"generator": generator} if isinstance(scheduler, DDPMScheduler | DDIMScheduler) else {}
        x = scheduler.step(out, t, x, **kwargs).prev_sample
    return x


def initial_noise(shape: tuple[int, ...], generator: torch.Generator, device: torch.device | str) -> torch.Tensor:
    """Standard normal starting latents drawn on the CPU generator (device-independent)."""
    return torch.randn(shape, generator=generator).to(device)
