"""Training hyperparameters: one validated ``TrainConfig``, loadable from YAML or a JSON dict.

This module imports only pydantic and yaml, so the service (no torch) validates a job's
hyperparameters with this very model, cross-field rules included: what the API accepts, the
worker runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from contract.families import FAMILIES, FAMILY_NAMES, family


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field."""


# Upper bounds: far above any sensible run, low enough that no value overflows a database column,
# a tensor shape or the disk before it is refused (each named in the error, like every field).
MAX_SEED = 2**63 - 1
MAX_STEPS = 10_000_000
MAX_RESOLUTION = 4096
MAX_BATCH = 4096
MAX_BANK_SIZE = 200_000
MAX_LIST = 64  # labels, prompts and module names shown or adapted
MAX_TEXT = 1000  # characters of one prompt or name

Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]
Text = Annotated[str, Field(max_length=MAX_TEXT)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class BankConfig(_Strict):
    """How the knowledge bank is sampled from the pre-trained model before tuning."""

    size: int = Field(4096, ge=1, le=MAX_BANK_SIZE, description="Number of images generated from the base model.")
    sampler: Literal["ddim", "ddpm"] = Field(
        "ddim", description="Sampler used to generate the bank (DDPM families; flow-matching families use their "
        "flow-matching Euler scheduler).")
    num_inference_steps: int = Field(50, ge=1, le=1000, description="Denoising steps per bank image.")
    guidance_scale: float = Field(
        1.5, ge=1.0, description="Classifier-free guidance for bank samples (1.5 is DiT's FID setting)."
    )
    batch_size: int = Field(64, ge=1, le=MAX_BATCH, description="Images generated per forward pass.")
    seed: Seed = Field(0, description="Seed of the bank; part of its cache key.")


class TrainConfig(_Strict):
    """Every knob of a tuning run. Defaults follow the Diff-Tuning reference (README, "What this is")."""

    # --- what to tune ---------------------------------------------------------------------------
    family: Literal[FAMILY_NAMES] = Field(  # type: ignore[valid-type]
        "dit", description="Model family (contract.families): " + ", ".join(FAMILY_NAMES) + "."
    )
    base_model: str = Field(
        "", max_length=MAX_TEXT, description="Diffusers-format folder or hub id of the base model (set by the CLI/worker)."
    )
    resolution: int = Field(256, ge=8, le=MAX_RESOLUTION, description="Training image size in pixels (square).")
    num_classes: int | None = Field(
        None, ge=1, le=100_000, description="Target classes K; inferred from the dataset when unset."
    )

    # --- the method -------------------------------------------------------------------------------
    method: Literal["difftune", "standard"] = Field(
        "difftune", description="`difftune` (retention + reconsolidation) or `standard` fine-tuning. Left out, it "
        "follows validation_guidance_scale: difftune when samples are guided (> 1), standard with Min-SNR "
        "(flow matching: plain standard) at guidance 1, the recipes measured best there (docs/RESULTS.md)."
    )
    target_power: float = Field(
        1.0, ge=0.0, le=8.0, description="s: target timesteps drawn with p(t) ∝ (t+1)^s; 0 = uniform."
    )
    bank_power: float | None = Field(
        None, ge=0.0, le=8.0, description="s': bank timesteps drawn with p(t) ∝ (T-t)^s'; defaults to s."
    )
    bank_share: float = Field(0.2, ge=0.0, lt=1.0, description="Share of each batch taken from the bank.")
    bank_loss_weight: float = Field(0.1, ge=0.0, description="Weight of the bank (retention) loss.")
    bank_label: Literal["null", "source", "prompt"] = Field(
        "null",
        description="Condition of bank samples: the null label / empty prompt (paper), a separate source "
        "token (dit), or the prompt each bank image was generated with (sd, controlnet).",
    )
    bank_prompts: list[Text] | None = Field(
        None, max_length=MAX_BANK_SIZE, description="Prompts the sd/controlnet bank is sampled with; defaults to the dataset's captions."
    )
    bank: BankConfig = Field(default_factory=BankConfig)
    loss_weighting: Literal["none", "p2", "min_snr", "sigma_sqrt", "cosmap"] = Field(
        "none", description="Per-sample loss weighting baseline applied on top of the method: p2, min_snr "
        "(DDPM families) or the SD3 paper's sigma_sqrt, cosmap (flow-matching families)."
    )
    p2_gamma: float = Field(1.0, ge=0.0, description="P2 weighting exponent gamma.")
    p2_k: float = Field(1.0, gt=0.0, description="P2 weighting offset k.")
    min_snr_gamma: float = Field(5.0, gt=0.0, description="Min-SNR clamp gamma.")
    sigma_density: Literal["native", "uniform", "logit_normal", "mode"] = Field(
        "native", description="Flow-matching families: the σ density standard training draws from (`native`: "
        "the family's own, SD3's shifted logit-normal, Flux's resolution-shifted logit-normal); Diff-Tuning "
        "reweights it by σ^s (target) and (1−σ)^s' (bank)."
    )
    logit_mean: float = Field(0.0, ge=-10.0, le=10.0, description="Mean of the logit-normal σ density.")
    logit_std: float = Field(1.0, gt=0.0, le=10.0, description="Std of the logit-normal σ density.")
    mode_scale: float = Field(1.29, ge=-1.0, le=1.8, description="Scale of the SD3 paper's `mode` σ density.")
    max_sequence_length: int | None = Field(
        None, ge=1, le=512, description="T5 tokens per prompt (sd3, flux); defaults to the pipeline's (256 for SD3, "
        "512 for Flux.1-dev). The cached prompt table grows with it."
    )
    distilled_guidance: float = Field(
        3.5, ge=0.0, le=100.0, description="Flux.1-dev's guidance-embedding value in training, the bank and "
        "samples (guidance-distilled: Flux uses no classifier-free guidance, so the guidance scales are unused)."
    )
    peft: Literal["full", "difffit", "lora"] = Field("full", description="Train all weights, DiffFit or LoRA.")
    lora_rank: int = Field(4, ge=1, le=1024, description="LoRA rank r.")
    lora_alpha: float | None = Field(None, gt=0.0, description="LoRA alpha; defaults to the rank (scale 1).")
    lora_target_modules: list[Text] | None = Field(
        None, max_length=MAX_LIST, description="Module names LoRA adapts; defaults to attention projections to_q/to_k/to_v/to_out.0."
    )
    lora_merge: bool = Field(
        False, description="Also merge LoRA into the checkpoint's pipeline weights (else they stay the base's)."
    )
    lora_format: Literal["diffusers", "kohya"] = Field(
        "diffusers", description="diffusers: the adapter in diffusers' format (always written); kohya: also "
        "lora/pytorch_lora_weights_kohya.safetensors with kohya's keys, as AUTOMATIC1111 and ComfyUI load it "
        "(sd, sdxl, sd3 and flux)."
    )

    # --- text-to-image and ControlNet ---------------------------------------------------------------
    validation_prompts: list[Text] | None = Field(
        None, max_length=MAX_LIST, description="Prompts drawn in sd/controlnet sample grids; defaults to the first 4 captions."
    )
    control_extractor: Literal["canny", "grayscale", "none"] = Field(
        "canny", description="How controls are computed when the dataset has no conditioning files, and "
        "for the bank's images (`none`: bank rows get a blank control)."
    )
    eval_every: int | None = Field(
        None, ge=1, le=MAX_STEPS, description="Steps between convergence evaluations (controlnet canny F1); "
        "defaults to sample_every."
    )
    convergence_threshold: float = Field(
        0.5, gt=0.0, le=1.0, description="Canny F1 whose first crossing is recorded as 'sudden convergence'."
    )

    # --- optimisation -------------------------------------------------------------------------------
    learning_rate: float = Field(1e-4, gt=0.0, le=1.0)
    weight_decay: float = Field(0.0, ge=0.0)
    adam_beta1: float = Field(0.9, ge=0.0, lt=1.0)
    adam_beta2: float = Field(0.999, ge=0.0, lt=1.0)
    max_grad_norm: float | None = Field(None, gt=0.0, description="Clip gradients to this norm if set.")
    batch_size: int = Field(32, ge=1, le=MAX_BATCH, description="Global batch size (split over DDP ranks).")
    max_steps: int = Field(24000, ge=1, le=MAX_STEPS)
    ema_decay: float = Field(0.9999, ge=0.0, le=1.0)
    ema_warmup: bool = Field(
        False, description="Use decay min(ema_decay, (1+n)/(10+n)) so short runs average usefully."
    )
    label_dropout: float = Field(0.1, ge=0.0, le=1.0, description="CFG label-drop rate of target rows.")
    random_flip: bool = Field(True, description="Random horizontal flips of target images.")
    upscale_small_images: bool = Field(
        False, description="Upscale images smaller than `resolution` (or than their bucket) instead of rejecting them."
    )
    aspect_buckets: bool = Field(
        False, description="Text-to-image and ControlNet families: train each image at the aspect ratio nearest "
        "its own, in buckets of about resolution² pixels (sides multiples of bucket_step), cropping as little as "
        "possible; each batch comes from one bucket. Off: every image is centre-cropped to a square."
    )
    bucket_step: int = Field(64, ge=2, le=MAX_RESOLUTION, description="Bucket sides are multiples of this many "
                             "pixels (a multiple of what the model needs: 64 for SD, 32 for SDXL, 16 for SD3/Flux).")
    bucket_max_aspect: float = Field(2.0, ge=1.0, le=8.0, description="Largest bucket aspect ratio (long side "
                                     "over short side).")

    # --- speed ------------------------------------------------------------------------------------
    mixed_precision: Literal["auto", "no", "bf16"] = Field(
        "auto", description="`auto`: bf16 autocast on CUDA, fp32 on CPU."
    )
    gradient_checkpointing: bool = Field(
        False, description="Recompute activations in the backward pass (much less activation memory, ~30% slower)."
    )
    compile: bool = Field(False, description="torch.compile the denoiser.")

    # --- memory savers (see the README's "Fitting large models") -------------------------------------
    optimizer: Literal["adamw", "adamw_8bit"] = Field(
        "adamw", description="adamw: torch's AdamW (fused on CUDA); adamw_8bit: bitsandbytes' 8-bit AdamW "
        "(its two moments in 8 bits: 2 instead of 8 bytes per trained parameter)."
    )
    ema_device: Literal["auto", "cpu"] = Field(
        "auto", description="Where the EMA weights live: auto (beside the model) or cpu (host memory: 4 bytes "
        "per trained parameter off the GPU, for a device-to-host copy every step)."
    )
    text_encoder_device: Literal["auto", "cpu"] = Field(
        "auto", description="Text-to-image families: keep the text encoders beside the model (auto) or in host "
        "memory (cpu; training reads cached embeddings, so only the bank and sample grids encode, on the CPU; "
        "frees e.g. T5-XXL's ~9.5 GB in bf16 for SD3/Flux)."
    )
    parallelism: Literal["ddp", "fsdp"] = Field(
        "ddp", description="With several GPUs: ddp (a full copy per GPU) or fsdp (FSDP2: weights, gradients, "
        "optimizer state and EMA sharded over the GPUs, for full fine-tuning of models that fit no single one)."
    )
    base_precision: Literal["fp32", "bf16", "fp8", "nf4"] = Field(
        "fp32", description="The frozen base weights under peft lora or difffit, in bytes per weight: bf16 2, "
        "fp8 1 (float8 storage of the Linear/Conv layers diffusers' layerwise casting takes, cast to bf16 per "
        "layer as it computes; needs gradient_checkpointing), nf4 ~0.52 (QLoRA: the transformer blocks' "
        "linears in bitsandbytes 4-bit NF4; peft lora only). They compute in bf16; checkpoints still hold "
        "the original base weights (read back from the base model's files)."
    )

    # --- outputs ------------------------------------------------------------------------------------
    checkpoint_every: int = Field(1000, ge=1, le=MAX_STEPS)
    keep_checkpoints: int = Field(3, ge=1, le=1000, description="Number of most recent checkpoints kept.")
    sample_every: int = Field(1000, ge=1, le=MAX_STEPS)
    validation_labels: list[Annotated[int, Field(ge=0, le=100_000)]] | None = Field(
        None, max_length=MAX_LIST, description="Target labels drawn in sample grids; defaults to every class (up to 16)."
    )
    validation_guidance_scale: float = Field(4.0, ge=1.0)
    guidance_mode: Literal["cfg", "domain"] = Field(
        "cfg", description="How sample grids are guided: cfg (the tuned model's own unconditional branch) or "
        "domain (Domain Guidance: that branch from the pre-trained base, ε_base + w·(ε_tuned − ε_base); free for "
        "LoRA and ControlNet, a host-memory copy of the base for full and DiffFit)."
    )
    sample_steps: int = Field(50, ge=1, le=1000, description="DDIM steps for sample grids.")
    log_every: int = Field(10, ge=1, le=MAX_STEPS)
    report_to: list[Literal["tensorboard", "mlflow", "wandb"]] = Field(
        default_factory=list, max_length=3, description="Experiment trackers fed every logged step (losses split "
        "target/bank, lr, images/s, the convergence metric) and every sample grid: tensorboard (OUT/tensorboard, "
        "published with a service job), mlflow (MLFLOW_TRACKING_URI, else OUT/mlflow/mlflow.db), wandb (when "
        "installed). `none` or a single name are accepted too."
    )
    tracker_project: str = Field("difftune", min_length=1, max_length=100,
                                 description="MLflow experiment / W&B project the runs are logged under.")
    seed: Seed = 0

    @model_validator(mode="before")
    @classmethod
    def _guidance_aware_recipe(cls, data: Any) -> Any:
        """The default recipe follows the guidance samples are drawn at (docs/RESULTS.md, "Choosing the default
        recipe"): Diff-Tuning's reference recipe when they are guided (``validation_guidance_scale`` above 1;
        the default 4), standard fine-tuning with Min-SNR (plain standard for flow matching) at guidance 1,
        where Diff-Tuning measured worse than standard on every preset and Min-SNR better. Only a ``method``
        (and ``loss_weighting``) the request left out is chosen; the stored config shows the choice."""
        if not isinstance(data, dict) or "method" in data:
            return data
        try:
            unguided = float(data.get("validation_guidance_scale", 4.0)) <= 1.0
            flow = family(data.get("family", "dit")).flow_matching
        except (TypeError, ValueError, KeyError):
            return data  # the field validators name the bad value
        if not unguided:
            return data
        return {**data, "method": "standard",
                "loss_weighting": data.get("loss_weighting", "none" if flow else "min_snr")}

    @field_validator("report_to", mode="before")
    @classmethod
    def _trackers(cls, value: Any) -> Any:
        """``none`` → [], a single name → [name]; each tracker once."""
        if value is None or value == "none":
            return []
        if isinstance(value, str):
            return [value]
        return list(dict.fromkeys(value)) if isinstance(value, list) else value

    @model_validator(mode="after")
    def _check_consistency(self) -> TrainConfig:
        """Cross-field rules; each message starts with the field it is about (see ``field_errors``)."""
        if self.validation_labels is not None and self.num_classes is not None:
            bad = [label for label in self.validation_labels if not 0 <= label < self.num_classes]
            if bad:
                raise ValueError(f"validation_labels: {bad} outside 0..{self.num_classes - 1}")
        text = family(self.family).text_conditioned
        if self.bank_label == "prompt" and not text:
            raise ValueError(f"bank_label: 'prompt' needs a text-conditioned family, not {self.family}")
        if self.bank_label == "source" and text:
            raise ValueError(f"bank_label: 'source' is for class-conditional families; {self.family} uses "
                             "'null' or 'prompt'")
        flow = family(self.family).flow_matching
        if self.loss_weighting in (("p2", "min_snr") if flow else ("sigma_sqrt", "cosmap")):
            kind = "flow-matching" if flow else "DDPM"
            raise ValueError(f"loss_weighting: {self.loss_weighting!r} does not apply to {self.family}, a {kind} "
                             f"family (use {'none, sigma_sqrt or cosmap' if flow else 'none, p2 or min_snr'})")
        if self.sigma_density != "native" and not flow:
            raise ValueError(f"sigma_density: only flow-matching families draw σ; {self.family} uses DDPM timesteps")
        if self.lora_format == "kohya" and (self.peft != "lora" or family(self.family).kohya_prefix is None):
            kohya = ", ".join(name for name, spec in FAMILIES.items() if spec.kohya_prefix)
            raise ValueError(f"lora_format: 'kohya' needs peft: lora on a family with a kohya format ({kohya}); "
                             f"here peft: {self.peft}, family: {self.family}")
        if self.base_precision == "nf4" and self.peft != "lora":
            raise ValueError(f"base_precision: nf4 (QLoRA) needs peft: lora, not {self.peft}" + (
                "; DiffFit trains the biases inside the linear layers nf4 quantises: use base_precision: fp8 or "
                "bf16 with difffit" if self.peft == "difffit" else ""))
        if self.base_precision != "fp32" and self.peft == "full":
            raise ValueError(f"base_precision: only peft lora or difffit freeze a base to hold in "
                             f"{self.base_precision}; with peft: full every weight trains in fp32")
        if self.base_precision != "fp32" and self.mixed_precision == "no":
            raise ValueError(f"base_precision: a {self.base_precision} base needs bf16 compute; set "
                             "mixed_precision: auto or bf16")
        if self.base_precision == "fp8" and not self.gradient_checkpointing:
            raise ValueError("base_precision: fp8 needs gradient_checkpointing: true (each layer computes from a "
                             "bf16 copy of its fp8 weights, which the backward pass would otherwise keep for "
                             "every layer: more memory than base_precision: bf16)")
        if self.text_encoder_device != "auto" and not text:
            raise ValueError(f"text_encoder_device: {self.family} has no text encoders")
        if self.parallelism == "fsdp" and (self.peft != "full" or self.ema_device != "auto"):
            raise ValueError("parallelism: fsdp shards a full fine-tuning (peft: full, ema_device: auto); LoRA "
                             "fits one GPU with base_precision: bf16, use ddp for it")
        if self.aspect_buckets and not text:
            raise ValueError(f"aspect_buckets: {self.family} is class-conditional and trains square images; "
                             "buckets are for text-to-image and ControlNet families")
        if self.aspect_buckets and self.bucket_step > self.resolution:
            raise ValueError(f"bucket_step: {self.bucket_step}px is larger than the resolution {self.resolution}px")
        if self.guidance_mode == "domain" and self.family == "flux":
            raise ValueError("guidance_mode: flux is guidance-distilled (no unconditional branch at sampling), so "
                             "Domain Guidance does not apply")
        if self.uses_bank and self.batch_size < 2:
            raise ValueError("batch_size: Diff-Tuning with a knowledge bank needs at least 2 rows per batch "
                             "(one target, one bank)")
        return self

    # --- derived values -------------------------------------------------------------------------------
    @property
    def uses_bank(self) -> bool:
        """Whether the run trains on a knowledge bank (Diff-Tuning with a positive bank share)."""
        return self.method == "difftune" and self.bank_share > 0 and self.bank_loss_weight > 0

    @property
    def effective_bank_power(self) -> float:
        return self.target_power if self.bank_power is None else self.bank_power


def named_field(message: str) -> tuple[str | None, str]:
    """Split a model-level rule's message ``"field: what is wrong"`` (pydantic's ``Value error, ``
    prefix dropped) into (field, rest); (None, message) when it names no field."""
    message = message.removeprefix("Value error, ")
    head, sep, rest = message.partition(": ")
    return (head, rest) if sep and head.isidentifier() else (None, message)


def field_errors(err: ValidationError) -> list[tuple[str, str]]:
    """(field, message) for each problem; cross-field rules name their field in the message."""
    out = []
    for e in err.errors():
        field, (named, message) = ".".join(str(x) for x in e["loc"]), named_field(str(e["msg"]))
        if not field:
            field, message = (named, message) if named in TrainConfig.model_fields else ("config", message)
        elif named is not None:
            message = f"{named}: {message}"
        out.append((field, message))
    return out


def _format_error(err: ValidationError) -> str:
    return "; ".join(f"{field}: {message}" for field, message in field_errors(err))


def parse_config(data: dict[str, Any] | None) -> TrainConfig:
    """Validate a dict of hyperparameters; raise ``ConfigError`` naming each bad field."""
    try:
        return TrainConfig.model_validate(data or {})
    except ValidationError as err:
        raise ConfigError(f"invalid training config: {_format_error(err)}") from None


def load_config(path: str | Path, **overrides: Any) -> TrainConfig:
    """Load a YAML config file, apply keyword overrides, validate."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must contain a mapping of field: value")
    data.update({k: v for k, v in overrides.items() if v is not None})
    return parse_config(data)


def dump_config(config: TrainConfig) -> dict[str, Any]:
    """JSON-ready dict of a config (what is stored with a job and in meta.json)."""
    return config.model_dump(mode="json")
