"""Running out of accelerator memory: a clear failure that names the settings to change.

An OOM in any phase (knowledge bank, latent encoding, a training step, the validation samples)
becomes :class:`OutOfMemory`, a ``ValueError`` (the worker fails the job with its message, the CLI
prints it). The checkpoints already written stay; a rerun with a suggested change resumes from them.
"""

from __future__ import annotations

from pathlib import Path

from contract.families import family
from contract.train_config import TrainConfig

PHASES = {"load": "loading the base model", "bank": "generating the knowledge bank", "encode": "encoding the dataset to latents",
          "train": "training", "validation": "drawing validation samples"}


class OutOfMemory(ValueError):
    """The run did not fit the device's memory; the message says what to change (callers add how to
    continue: ``--resume`` for the CLI, ``resume_from`` over REST)."""


# the next step down for a frozen base: bf16 halves it; LoRA then goes to 4 bits (QLoRA), DiffFit to fp8
LOWER_BASE = {"lora": {"fp32": "bf16", "bf16": "nf4", "fp8": "nf4"}, "difffit": {"fp32": "bf16", "bf16": "fp8"}}

def suggestions(config: TrainConfig, phase: str) -> list[str]:
    """Settings (``field: value``) that lower the memory of ``phase``, the cheapest first."""
    if phase == "bank":
        return [f"bank.batch_size: {max(1, config.bank.batch_size // 2)}"] if config.bank.batch_size > 1 else []
    if phase == "encode":
        return [f"resolution below {config.resolution}"]
    if phase == "validation":
        return ["fewer validation_prompts / validation_labels", f"sample_every above {config.sample_every}"]
    out = []
    if not config.gradient_checkpointing:
        out.append("gradient_checkpointing: true")
    smallest = 2 if config.uses_bank else 1
    if config.batch_size // 2 >= smallest:
        out.append(f"batch_size: {config.batch_size // 2}")
    if config.peft == "full":
        out.append("peft: lora")
    elif lower := LOWER_BASE[config.peft].get(config.base_precision):
        out.append(f"base_precision: {lower}")
    if config.optimizer == "adamw":
        out.append("optimizer: adamw_8bit")
    if config.ema_device == "auto":
        out.append("ema_device: cpu")
    if config.text_encoder_device == "auto" and family(config.family).text_conditioned:
        out.append("text_encoder_device: cpu")
    out.append(f"resolution below {config.resolution}")
    return out


def out_of_memory(config: TrainConfig, phase: str, step: int | None, last_checkpoint: Path | None) -> OutOfMemory:
    """The error for an OOM in ``phase`` (at ``step``), naming what to change and what was kept."""
    where = PHASES.get(phase, phase) + (f" after step {step}" if step else "")
    change = "; ".join(suggestions(config, phase)) or "a device with more memory"
    kept = f"the last checkpoint ({last_checkpoint.name}) is kept" if last_checkpoint else "no checkpoint was written yet"
    return OutOfMemory(f"out of memory while {where} (batch_size {config.batch_size}, resolution "
                       f"{config.resolution}, peft {config.peft}); change one of: {change}; {kept}")
