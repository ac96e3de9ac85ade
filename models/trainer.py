"""One Trainer for every family: the Diff-Tuning batch, optimisation, EMA, checkpoints, resume, DDP.

A step draws target rows (noise levels towards high noise: t ∝ (t+1)^s, or σ ∝ q(σ)·σ^s for
flow matching; labels with the CFG drop) and knowledge-bank rows (towards low noise, the bank
condition) from the family's ``NoiseProcess`` (``models/noise.py``), runs one forward pass over both, and minimises
mean(target) + w·mean(bank). All randomness comes from one CPU generator per rank whose state is
checkpointed, so a resumed run continues bit-for-bit on CPU.
"""

from __future__ import annotations

import copy
import logging
import math
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from contract.outputs import step_name
from contract.train_config import TrainConfig, dump_config
from models import checkpoints as ckpt
from models import fsdp
from models.bank import KnowledgeBank
from models.data_order import EpochSampler, data_order
from models.difftune import combine_losses, per_sample_mse, split_batch
from models.distributed import DistInfo, any_rank, barrier, mean_across_ranks
from models.domain_guidance import KeptBase
from models.ema import EMA, host_copy
from models.families.base import Family
from models.grid import save_grid
from models.latents import LatentSet
from models.memory_savers import build_optimizer, check_compute, hold_frozen_base
from models.peft import prepare_trainable
from models.precision import autocast, uses_bf16

log = logging.getLogger(__name__)


#################################################################################
#                               Progress                                        #
#################################################################################


@dataclass(frozen=True)
class TrainProgress:
    """What the trainer reports every ``log_every`` steps (and at the end)."""

    step: int
    total_steps: int
    loss: float
    loss_target: float
    loss_bank: float | None
    images_per_sec: float
    eta_seconds: float
    learning_rate: float
    evaluation: dict[str, Any] | None = None  # latest convergence metric and the step it crossed

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


ProgressCallback = Callable[[TrainProgress], None]
ArtifactCallback = Callable[[str, int, Path], None]  # (kind "checkpoint" | "samples", step, path)


@dataclass(frozen=True)
class FitResult:
    """How a ``fit`` call ended."""

    step: int
    stopped: bool
    last_checkpoint: Path | None
    last_progress: TrainProgress | None


#################################################################################
#                                 Trainer                                       #
#################################################################################


class Trainer:
    """Tunes ``family.denoiser`` on a target latent set, with a knowledge bank when configured."""

    def __init__(self, family: Family, config: TrainConfig, target: LatentSet, bank: KnowledgeBank | None,
                 out_dir: str | Path, *, dist: DistInfo | None = None):
        self.family, self.config, self.target, self.bank = family, config, target, bank
        self.out_dir = Path(out_dir)
        self.dist = dist or DistInfo(device=str(next(family.denoiser.parameters()).device))
        self.device = self.dist.device
        if config.batch_size % self.dist.world_size:
            raise ValueError(f"batch_size: {config.batch_size} is not divisible by {self.dist.world_size} processes")
        per_rank = config.batch_size // self.dist.world_size
        self.split = split_batch(per_rank, config.bank_share, config.uses_bank)
        if self.split.bank and (bank is None or len(bank) == 0):
            raise ValueError("method difftune needs a knowledge bank (bank_share > 0) but none was given")

        module = family.denoiser.to(self.device).train()
        self.kept_base = KeptBase(family, module, config)  # Domain Guidance's base, before anything trains
        params = prepare_trainable(module, config)
        check_compute(config, uses_bf16(self.device, config.mixed_precision))
        hold_frozen_base(module, config.base_precision)
        if config.gradient_checkpointing:
            module.enable_gradient_checkpointing()
        # FSDP2 shards the module in place (its parameters become DTensor shards); DDP wraps it
        self.sharded = self.dist.enabled and config.parallelism == "fsdp"
        model: nn.Module = module
        if self.sharded:
            self._architecture = fsdp.plain_architecture(module)
            fsdp.shard_denoiser(module)
            params = [p for p in module.parameters() if p.requires_grad]
        elif self.dist.enabled:
            device_ids = [self.dist.local_rank] if self.device.startswith("cuda") else None
            model = DistributedDataParallel(module, device_ids=device_ids)
        self.module = module
        self.ema = EMA(module, config.ema_decay, warmup=config.ema_warmup,
                       device="cpu" if config.ema_device == "cpu" else None)
        self.model = torch.compile(model) if config.compile else model
        self.optimizer = build_optimizer(params, config, self.device)

        self.process = family.noise_process(config)
        self.rng = torch.Generator().manual_seed(config.seed * 1000 + self.dist.rank)
        self.target_order = data_order(target, config.seed, self.dist, self.split.target)
        # one bank order per bucket (a bank without buckets is its own only one)
        self.bank_orders = [EpochSampler(len(bank.bucket(b)), config.seed + 1 + b, self.dist)
                            for b in range(len(getattr(bank, "parts", [bank])))] if self.split.bank else []
        self.step = 0
        self.phase = "train"  # or "validation" while samples are drawn (named by an out-of-memory error)
        self.evaluation: dict[str, Any] = {}
        self._warn_about_ema()

    def _warn_about_ema(self) -> None:
        horizon = 1.0 / max(1e-12, 1.0 - self.config.ema_decay)
        if not self.config.ema_warmup and horizon > self.config.max_steps and self.dist.is_main:
            log.warning("ema_decay %.6g averages over ~%d steps but max_steps is %d: the EMA weights in "
                        "checkpoints will stay close to the base model (lower ema_decay or set ema_warmup: true)",
                        self.config.ema_decay, horizon, self.config.max_steps)

    # --- one step -----------------------------------------------------------------------------------
    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor, Any]:
        """(clean latents, noise levels, conditions) for one step: target rows first, then bank rows."""
        fam, cfg, split = self.family, self.config, self.split
        index = self.target_order.next(split.target)
        bucket = getattr(self.target_order, "bucket", 0)  # the aspect-ratio bucket of this batch
        latents = self.target.sample(index, self.rng)  # (n_t, C, h, w)
        cond = fam.drop_conditions(fam.index_conditions(self.target.labels, index), cfg.label_dropout, self.rng)
        t = self.process.sample_levels(split.target, "target", self.rng)  # (n_t,) t or σ
        if split.bank:
            bank = self.bank.bucket(bucket)
            bank_index = self.bank_orders[bucket].next(split.bank)
            latents = torch.cat([latents, bank.latents[bank_index]])  # (n_t + n_b, C, h, w)
            bank_cond = fam.bank_conditions(fam.index_conditions(bank.conditions, bank_index))
            cond = fam.concat_conditions(cond, bank_cond)
            t = torch.cat([t, self.process.sample_levels(split.bank, "bank", self.rng)])
        return latents, t, cond

    def train_step(self) -> dict[str, torch.Tensor]:
        """One optimisation step; returns detached loss tensors (no host sync)."""
        cfg = self.config
        latents, t, cond = self.next_batch()
        noise = torch.randn(latents.shape, generator=self.rng)
        latents, noise, t = (x.to(self.device, non_blocking=True) for x in (latents, noise, t))
        process = self.process
        noisy = process.add_noise(latents, noise, t)
        with autocast(self.device, cfg.mixed_precision):
            prediction = self.family.predict(self.model, noisy, process.model_time(t), cond)
        per_sample = per_sample_mse(prediction, process.target(latents, noise, t)) * process.loss_weights(t)
        parts = combine_losses(per_sample, self.split, cfg.bank_loss_weight)
        self.optimizer.zero_grad(set_to_none=True)
        parts.total.backward()
        if cfg.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(self.module.parameters(), cfg.max_grad_norm)
        self.optimizer.step()
        self.ema.update(self.module)
        self.step += 1
        zero = torch.zeros((), device=parts.target.device)
        return {"loss": parts.total.detach(), "loss_target": parts.target,
                "loss_bank": parts.bank if parts.bank is not None else zero}

    # --- state --------------------------------------------------------------------------------------
    def state_dict(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Shared (all-rank) state: raw weights, EMA, optimizer tensors; JSON: step, data order.
        Sharded (FSDP), every rank calls it and the full tensors reach rank 0."""
        if self.sharded:
            model_state, optim_state = fsdp.full_model_state(self.module), fsdp.full_optimizer_state(
                self.module, self.optimizer)
            ema_state = dict(zip(self.ema.names, fsdp.gather(self.ema.shadow), strict=True))
        else:
            model_state, optim_state = self.module.state_dict(), self.optimizer.state_dict()
            ema_state = self.ema.state_dict()
        tensors = {f"model.{k}": v for k, v in model_state.items()}
        tensors.update({f"ema.{k}": v for k, v in ema_state.items()})
        optim_tensors, optim_meta = ckpt.flatten_optimizer(optim_state)
        tensors.update(optim_tensors)
        state = {"step": self.step, "ema_updates": self.ema.num_updates, "optimizer": optim_meta,
                 "target_order": self.target_order.state_dict(),
                 "bank_order": [order.state_dict() for order in self.bank_orders] or None,
                 "world_size": self.dist.world_size, "evaluation": self.evaluation}
        return tensors, state

    def rank_state(self) -> dict[str, torch.Tensor]:
        return {"rng": self.rng.get_state(), "torch_rng": torch.get_rng_state()}

    def load_state_dict(self, tensors: dict[str, torch.Tensor], state: dict[str, Any],
                        rank_tensors: dict[str, torch.Tensor]) -> None:
        if state.get("world_size", 1) != self.dist.world_size:
            raise ValueError(f"checkpoint was written by {state.get('world_size')} processes; "
                             f"resume with the same number (now {self.dist.world_size})")
        model_state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
        ema_state = {k[len("ema."):]: v for k, v in tensors.items() if k.startswith("ema.")}
        optim_state = ckpt.unflatten_optimizer(tensors, state["optimizer"])
        if self.sharded:  # full tensors in the checkpoint, re-sharded onto this rank
            fsdp.load_full_model_state(self.module, model_state)
            fsdp.load_full_optimizer_state(self.module, self.optimizer, optim_state)
            shards = self.ema.shadow
            self.ema.load_state_dict({n: fsdp.shard_like(ema_state[n], like)
                                      for n, like in zip(self.ema.names, shards, strict=True)},
                                     int(state["ema_updates"]))
        else:
            self.module.load_state_dict(model_state, strict=True)
            self.ema.load_state_dict(ema_state, int(state["ema_updates"]))
            self.optimizer.load_state_dict(optim_state)
        self.target_order.load_state_dict(state["target_order"])
        saved = state.get("bank_order") or []
        for order, order_state in zip(self.bank_orders, [saved] if isinstance(saved, dict) else saved, strict=False):
            order.load_state_dict(order_state)  # a dict: written before buckets, by a bank of one
        self.rng.set_state(rank_tensors["rng"])
        torch.set_rng_state(rank_tensors["torch_rng"])
        self.step = int(state["step"])
        self.evaluation = dict(state.get("evaluation") or {})

    def resume(self, checkpoint: Path) -> None:
        """Restore everything from a checkpoint folder written by ``save_checkpoint``."""
        self.load_state_dict(*ckpt.read_trainer_state(checkpoint, self.dist.rank))

    def ema_model(self) -> nn.Module | None:
        """A host-memory copy of the denoiser carrying the EMA weights (what checkpoints export), so
        saving never holds a second model on the device. Sharded, every rank calls it (a gather) and only
        rank 0 gets the model (on its device)."""
        if self.sharded:
            return self._gathered(ema=True)
        model = host_copy(self.module)
        self.ema.copy_to(model)
        return model.eval()

    @contextmanager
    def ema_weights(self) -> Iterator[nn.Module | None]:
        """The denoiser with the EMA weights for sampling: swapped into the training module in place (no
        second model on the device); sharded, the gathered EMA model on rank 0 (None elsewhere)."""
        if self.sharded or self._inference_needs_fp32():  # gathered, or fp32 on the CPU: copies either way
            yield self._gathered(ema=True) if self.sharded else self.ema_model().float()
            return
        was_training = self.module.training
        with self.ema.swapped_in(self.module) as model:
            yield model.eval()
        self.module.train(was_training)

    def _gathered(self, *, ema: bool) -> nn.Module | None:
        """The sharded denoiser as one plain module on rank 0 (raw or EMA weights); None elsewhere."""
        state = fsdp.full_model_state(self.module)
        shadow = fsdp.gather(self.ema.shadow) if ema else None
        if not self.dist.is_main:
            return None
        if shadow is not None:
            state.update(zip(self.ema.names, shadow, strict=True))
        return fsdp.rebuild(self._architecture, state, self.module).to(self.device).eval()

    def _ema_from(self, tensors: dict[str, torch.Tensor]) -> nn.Module:
        """The EMA denoiser rebuilt from gathered checkpoint tensors (``model.*`` with ``ema.*`` over them)."""
        state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
        state.update({k[len("ema."):]: v for k, v in tensors.items() if k.startswith("ema.")})
        return fsdp.rebuild(self._architecture, state, self.module).to(self.device).eval()

    def _inference_needs_fp32(self) -> bool:
        """A bf16-held base needs bf16 autocast, which sampling only uses on CUDA: elsewhere the
        copies that sample or evaluate are cast to fp32."""
        return self.config.base_precision != "fp32" and not uses_bf16(self.device)

    # --- outputs ------------------------------------------------------------------------------------
    def save_checkpoint(self, metrics: dict[str, Any] | None = None) -> Path | None:
        """Write a complete checkpoint for the current step (rank 0 publishes it)."""
        stage = ckpt.staging_dir(self.out_dir, self.step)
        if self.dist.is_main:
            shutil.rmtree(stage, ignore_errors=True)
            stage.mkdir(parents=True)
        barrier(self.dist)
        ckpt.write_rank_state(stage, self.dist.rank, self.rank_state())
        path = None
        # sharded, every rank takes part in gathering the state (once); rank 0 writes it
        state = self.state_dict() if self.sharded or self.dist.is_main else None
        if self.dist.is_main:
            ema_model = self._ema_from(state[0]) if self.sharded else self.ema_model()
            self.family.save_pretrained(ema_model, stage)
            ckpt.write_trainer_state(stage, *state)
        barrier(self.dist)
        if self.dist.is_main:
            meta = {"config": dump_config(self.config), "metrics": metrics or {},
                    "world_size": self.dist.world_size, **self.family.metadata()}
            path = ckpt.finalize_checkpoint(self.out_dir, self.step, meta, self.config.keep_checkpoints)
        barrier(self.dist)
        return path

    def save_samples(self) -> Path | None:
        """Sample a validation grid with the EMA weights into samples/step_XXXXXXX.png (rank 0)."""
        if not (self.sharded or self.dist.is_main):
            return None
        with self.ema_weights() as model:
            if not self.dist.is_main:
                return None
            with self.kept_base.beside(model, self.device) as base:  # None: CFG
                images = self.family.sample_grid(model, self.config, torch.Generator().manual_seed(self.config.seed),
                                                 base=base)
        path = self.out_dir / "samples" / f"{step_name(self.step)}.png"
        save_grid(images, path)
        return path

    def evaluate(self) -> dict[str, Any]:
        """Score the raw (not EMA) weights with the family's convergence metric on rank 0 and record
        the first step at which it reaches ``convergence_threshold`` ("sudden convergence")."""
        name = self.family.convergence_metric
        gathered = self._gathered(ema=False) if name and self.sharded else None
        if not name or not self.dist.is_main:
            return self.evaluation
        generator = torch.Generator().manual_seed(self.config.seed)
        was_training = self.module.training
        model = gathered or (copy.deepcopy(self.module).float() if self._inference_needs_fp32() else self.module)
        value = float(self.family.evaluate(model, self.config, generator)[name])
        self.module.train(was_training)
        ev = self.evaluation
        ev.update({"metric": name, name: value, "step": self.step, "threshold": self.config.convergence_threshold})
        ev.setdefault("history", []).append([self.step, value])
        if ev.get("converged_at_step") is None:
            ev["converged_at_step"] = self.step if value >= self.config.convergence_threshold else None
        return ev

    # --- loop ---------------------------------------------------------------------------------------
    def fit(self, *, on_progress: ProgressCallback | None = None, on_artifact: ArtifactCallback | None = None,
            should_stop: Callable[[], bool] | None = None) -> FitResult:
        """Train until ``max_steps`` or until ``should_stop`` says so; either way the last step is checkpointed.

        ``should_stop`` is asked after every step in a single process, so a stop (a cancel, SIGTERM)
        costs at most one step. Under DDP the ranks must agree on it with an all-reduce, so there it is
        asked every ``log_every`` steps, where the loss is all-reduced anyway.
        """
        cfg = self.config
        stop_every = cfg.log_every if self.dist.enabled else 1
        sums: dict[str, torch.Tensor] = {}
        window_steps, window_start, started, start_step = 0, time.perf_counter(), time.perf_counter(), self.step
        progress, last_ckpt, stopped = None, ckpt.latest_checkpoint(self.out_dir), False
        while self.step < cfg.max_steps:
            out = self.train_step()
            for k, v in out.items():
                sums[k] = sums.get(k, 0) + v
            window_steps += 1
            done = self.step >= cfg.max_steps
            if self.step % (cfg.eval_every or cfg.sample_every) == 0 or done:
                self.phase = "validation"
                self.evaluate()
                self.phase = "train"
            if self.step % cfg.log_every == 0 or done:
                means = mean_across_ranks(torch.stack([sums[k] for k in ("loss", "loss_target", "loss_bank")])
                                          / window_steps, self.dist).tolist()
                now = time.perf_counter()
                rate = window_steps * cfg.batch_size / max(now - window_start, 1e-9)
                per_step = (now - started) / max(self.step - start_step, 1)
                progress = TrainProgress(step=self.step, total_steps=cfg.max_steps, loss=means[0],
                                    loss_target=means[1], loss_bank=means[2] if self.split.bank else None,
                                    images_per_sec=rate, eta_seconds=per_step * (cfg.max_steps - self.step),
                                    learning_rate=self.optimizer.param_groups[0]["lr"],
                                    evaluation=copy.deepcopy(self.evaluation) or None)
                if not math.isfinite(progress.loss):
                    raise FloatingPointError(f"loss became {progress.loss} at step {self.step}; "
                                             "lower learning_rate or enable max_grad_norm")
                if on_progress and self.dist.is_main:
                    on_progress(progress)
                sums, window_steps, window_start = {}, 0, now
            if self.step % stop_every == 0 or done:  # a collective under DDP: every rank asks here
                stopped = any_rank(bool(should_stop and should_stop()), self.dist) and not done
            if self.step % cfg.checkpoint_every == 0 or done or stopped:
                last_ckpt = self.save_checkpoint(progress.as_dict() if progress else None) or last_ckpt
                if on_artifact and last_ckpt and self.dist.is_main:
                    on_artifact("checkpoint", self.step, last_ckpt)
            if self.step % cfg.sample_every == 0 or done:
                self.phase = "validation"
                grid = self.save_samples()
                self.phase = "train"
                if on_artifact and grid:
                    on_artifact("samples", self.step, grid)
            if stopped:
                break
        return FitResult(step=self.step, stopped=stopped, last_checkpoint=last_ckpt, last_progress=progress)
