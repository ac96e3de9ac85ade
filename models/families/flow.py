"""What flow-matching families (SD3/SD3.5, Flux.1) share: the σ process and the Euler sampler.

Training draws σ from the family's native density reweighted per stream (``models/noise.py``);
sampling runs diffusers' ``FlowMatchEulerDiscreteScheduler`` from the base model's config, whose
timesteps are σ·1000 (what ``NoiseProcess.model_time`` gives the denoiser in training).
"""

from __future__ import annotations

from diffusers import FlowMatchEulerDiscreteScheduler

from contract.train_config import TrainConfig
from models.flow_matching import SigmaDensity
from models.noise import FlowProcess, NoiseProcess, flow_density


class FlowMatching:
    """Mixin for a ``LatentFamily`` trained by flow matching."""

    noise_scheduler_class = FlowMatchEulerDiscreteScheduler
    scheduler_config: dict

    def native_density(self) -> SigmaDensity:
        """The σ density of the family's standard training: logit-normal(0, 1), shifted as its scheduler is."""
        return SigmaDensity("logit_normal", shift=float(self.scheduler_config.get("shift", 1.0)))

    def noise_process(self, config: TrainConfig) -> NoiseProcess:
        steps = int(self.scheduler_config.get("num_train_timesteps", 1000))
        return FlowProcess(flow_density(config, self.native_density()), config, steps)

    def inference_scheduler(self, sampler: str, steps: int) -> FlowMatchEulerDiscreteScheduler:
        """The flow-matching Euler scheduler over ``steps`` steps (``sampler`` is for DDPM families)."""
        scheduler = FlowMatchEulerDiscreteScheduler.from_config(self.scheduler_config)
        scheduler.set_timesteps(steps, **self.timestep_options(steps))
        return scheduler

    def timestep_options(self, steps: int) -> dict:
        """Extra ``set_timesteps`` arguments (Flux: σ schedule and resolution shift)."""
        return {}
