"""Class-conditional DiT on diffusers: DiTTransformer2DModel + AutoencoderKL + a DDPM schedule.

Label space. The base model has ``B`` class rows plus a null row (id ``B``). A target with ``K``
classes reuses rows 0..K-1 when K ≤ B (as the authors do) and otherwise extends the table, new
rows starting from the null embedding. With ``bank_label: source`` the bank gets its own row (a
copy of the base null row) and the target's CFG drop a fresh null row, so tuning the target's
unconditional branch does not teach it the source domain. diffusers' DiT keeps one label table
per block, so every table is remapped the same way.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, DDPMScheduler, DiTPipeline, DiTTransformer2DModel
from torch import nn

from contract.train_config import ConfigError, TrainConfig
from models.difftune import drop_labels
from models.families.base import LatentFamily, fingerprint_module
from models.lora import save_lora
from models.sampling import guided

#################################################################################
#                               Label tables                                    #
#################################################################################


def _label_embedders(transformer: nn.Module) -> list[nn.Module]:
    """Every LabelEmbedding of a diffusers DiT (one per block)."""
    return [m for m in transformer.modules() if type(m).__name__ == "LabelEmbedding"]


def disable_builtin_label_dropout(transformer: nn.Module) -> None:
    """diffusers drops labels at 10% per block, independently, in train mode: switch that off."""
    for emb in _label_embedders(transformer):
        emb.dropout_prob = 0.0


@torch.no_grad()
def resize_label_tables(transformer: nn.Module, num_classes: int, copy_rows: int) -> None:
    """Resize every label table to ``num_classes`` class rows + a null row.

    Rows 0..copy_rows-1 keep their embeddings; every other row, the null row included, starts from
    the base model's null embedding.
    """
    for emb in _label_embedders(transformer):
        old = emb.embedding_table.weight  # (B + 1, D)
        null = old[emb.num_classes]  # (D,)
        new = null.expand(num_classes + 1, -1).clone()  # (K' + 1, D)
        new[:copy_rows] = old[:copy_rows]
        emb.embedding_table = nn.Embedding.from_pretrained(new, freeze=False)
        emb.num_classes = num_classes
    transformer.register_to_config(num_embeds_ada_norm=num_classes)


#################################################################################
#                                  Family                                       #
#################################################################################


def _load_error(location: str, err: Exception) -> ConfigError:
    return ConfigError(f"base_model: cannot load a DiT pipeline from {location!r}: {err}")


class DiTFamily(LatentFamily):
    """Class-conditional latent DiT (Peebles & Xie) in diffusers format."""

    name = "dit"

    def __init__(self, transformer: DiTTransformer2DModel, vae: AutoencoderKL, scheduler_config: dict,
                 *, location: str = "", id2label: dict[int, str] | None = None, device: str = "cpu"):
        self.device = torch.device(device)
        self.location = location
        self.denoiser = transformer.to(self.device)
        self.vae = vae.to(self.device).eval().requires_grad_(False)
        self.scheduler_config = dict(scheduler_config)
        self.noise_scheduler = DDPMScheduler.from_config(self.scheduler_config)
        self.base_fingerprint = fingerprint_module(transformer)
        self.base_num_classes = int(transformer.config.num_embeds_ada_norm)
        self.base_id2label = id2label or {}
        self.target_classes: list[str] | None = None
        self.source_label: int | None = None
        disable_builtin_label_dropout(self.denoiser)

    @classmethod
    def from_pretrained(cls, location: str, *, config: TrainConfig | None = None, device: str = "cpu") -> DiTFamily:
        """Load from a diffusers-format folder (or a hub id when online)."""
        if not location:
            raise ConfigError("base_model: no base model location given")
        path = Path(location)
        looks_local = path.is_absolute() or location.startswith(".") or path.exists()
        if looks_local and not (path / "transformer").is_dir():
            raise ConfigError(f"base_model: {location!r} is not a diffusers DiT folder (no transformer/ inside)")
        try:
            transformer = DiTTransformer2DModel.from_pretrained(location, subfolder="transformer")
            vae = AutoencoderKL.from_pretrained(location, subfolder="vae")
            scheduler = DDPMScheduler.from_pretrained(location, subfolder="scheduler")
        except (OSError, ValueError) as err:
            raise _load_error(location, err) from err
        id2label = _read_id2label(path / "model_index.json") if looks_local else {}
        return cls(transformer, vae, dict(scheduler.config), location=location, id2label=id2label, device=device)

    # --- labels ---------------------------------------------------------------------------------
    @property
    def null_label(self) -> int:
        return int(self.denoiser.config.num_embeds_ada_norm)

    def setup_labels(self, class_names: list[str], bank_label: str = "null") -> None:
        """Map the target's K classes onto the base label table (see the module docstring)."""
        k, base = len(class_names), self.base_num_classes
        extra = 1 if bank_label == "source" else 0
        rows = max(k, base)
        if rows + extra != base:
            resize_label_tables(self.denoiser, rows + extra, copy_rows=base)
        self.source_label = rows if extra else None
        self.target_classes = list(class_names)

    def _require_base(self, what: str) -> None:
        if self.target_classes is not None:
            raise RuntimeError(f"{what} must run on the base model, before setup_labels()")

    # --- conditioning -----------------------------------------------------------------------------
    def drop_conditions(self, cond: torch.Tensor, drop_prob: float, generator: torch.Generator) -> torch.Tensor:
        return drop_labels(cond, self.null_label, drop_prob, generator)

    def bank_conditions(self, bank_cond: torch.Tensor) -> torch.Tensor:
        label = self.null_label if self.source_label is None else self.source_label
        return torch.full_like(bank_cond, label)

    def concat_conditions(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.cat([a, b])

    def index_conditions(self, cond: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return cond[index]

    # --- denoising --------------------------------------------------------------------------------
    def predict(self, model: nn.Module, noisy: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        out = model(noisy, timestep=t, class_labels=cond.to(noisy.device)).sample  # (N, C or 2C, h, w)
        return out[:, : noisy.shape[1]]  # learned-σ models: keep the ε half

    def _predict_fn(self, model: nn.Module, labels: torch.Tensor, null: int, scale: float, base=None,
                    base_null: int | None = None):
        """CFG against the ``null`` label, or with ``base``, Domain Guidance: the unconditional branch from the
        base model on its null label ``base_null`` (default ``null``)."""
        def cond(x, t):
            return self.predict(model, x, t, labels)

        def uncond(x, t):
            return self.predict(base or model, x, t, torch.full_like(labels, null if base_null is None else base_null))

        return guided(cond, uncond, scale)

    @torch.no_grad()
    def sample_latents(self, model: nn.Module, labels: torch.Tensor, *, null: int, guidance: float,
                       steps: int, sampler: str, generator: torch.Generator, base=None,
                       base_null: int | None = None) -> torch.Tensor:
        """Latents for ``labels`` sampled with CFG against the ``null`` label (Domain Guidance with ``base``)."""
        predict = self._predict_fn(model, labels.to(self.device), null, guidance, base, base_null)
        return self.sample_chain(predict, len(labels), steps=steps, sampler=sampler, generator=generator)

    # --- data ---------------------------------------------------------------------------------------
    def prepare_target(self, dataset, config: TrainConfig, bank, *, cache_dir, progress=None):
        """Map the class folders onto the label table, then encode (and cache) the images."""
        from models.latents import encode_image_folder

        self.setup_labels(dataset.class_names, config.bank_label)
        return encode_image_folder(self, dataset, resolution=config.resolution, flip=config.random_flip,
                                   cache_dir=cache_dir, progress=progress)

    # --- knowledge bank and samples -------------------------------------------------------------------
    def generate_bank_batch(self, n: int, config: TrainConfig, generator: torch.Generator, *, size=None):
        self._require_base("knowledge-bank generation")
        known = sorted(k for k in self.base_id2label if 0 <= k < self.base_num_classes)
        pool = torch.tensor(known or range(self.base_num_classes), dtype=torch.long)  # classes the base knows
        labels = pool[torch.randint(0, len(pool), (n,), generator=generator)]  # (n,)
        bank = config.bank
        latents = self.sample_latents(self.denoiser.eval(), labels, null=self.base_num_classes,
                                      guidance=bank.guidance_scale, steps=bank.num_inference_steps,
                                      sampler=bank.sampler, generator=generator)
        return latents.cpu(), labels

    def validation_labels(self, config: TrainConfig) -> torch.Tensor:
        if config.validation_labels:
            return torch.tensor(config.validation_labels, dtype=torch.long)
        k = len(self.target_classes or []) or self.base_num_classes
        return torch.arange(min(k, 16), dtype=torch.long)

    def sample_grid(self, model: nn.Module, config: TrainConfig, generator: torch.Generator, *,
                    base=None) -> torch.Tensor:
        was_training = model.training
        latents = self.sample_latents(model.eval(), self.validation_labels(config), null=self.null_label,
                                      guidance=config.validation_guidance_scale, steps=config.sample_steps,
                                      sampler="ddim", generator=generator, base=base)
        model.train(was_training)
        return self.decode_latents(latents)

    # --- export ---------------------------------------------------------------------------------------
    def id2label(self) -> dict[int, str]:
        if self.target_classes is None:
            return dict(self.base_id2label)
        return dict(enumerate(self.target_classes))

    def save_pretrained(self, model: nn.Module, path: Path) -> None:
        transformer = self.export_denoiser(model)
        scheduler = DDPMScheduler.from_config(self.scheduler_config)
        pipe = DiTPipeline(transformer=transformer, vae=self.vae, scheduler=scheduler)
        pipe.save_pretrained(path, safe_serialization=True)
        save_lora(model, path, "transformer")
        index_file = Path(path) / "model_index.json"
        index = json.loads(index_file.read_text())
        index["id2label"] = {str(k): v for k, v in self.id2label().items()}
        index_file.write_text(json.dumps(index, indent=2))

    def metadata(self) -> dict[str, Any]:
        return {
            **super().metadata(),
            "base_model": self.location,
            "base_num_classes": self.base_num_classes,
            "num_classes": len(self.target_classes or []),
            "null_label": self.null_label,
            "source_label": self.source_label,
            "id2label": {str(k): v for k, v in self.id2label().items()},
        }


def _read_id2label(index_file: Path) -> dict[int, str]:
    try:
        raw = json.loads(index_file.read_text()).get("id2label") or {}
    except (OSError, ValueError):
        return {}
    return {int(k): str(v) for k, v in raw.items()}

