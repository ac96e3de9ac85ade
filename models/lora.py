"""LoRA adapters (peft) on any family's denoiser, saved in diffusers' LoRA format.

Only the low-rank A/B matrices train. On export the pipeline folder gets plain weights: the base
weights, or with ``lora_merge`` the merged ΔW = (α/r)·B·A added in; the adapter itself is always
written to ``CKPT/lora/pytorch_lora_weights.safetensors`` (and with ``lora_format: kohya`` also in
kohya's keys, see ``models/lora_kohya.py``). For SD, SDXL, SD3 and Flux that file loads
with the pipeline's ``load_lora_weights(CKPT/"lora")`` onto the base model; for DiT and
ControlNet (whose pipelines have no LoRA loader) :func:`load_lora` attaches it to a module.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model, set_peft_model_state_dict
from peft.tuners.lora import LoraLayer
from safetensors.torch import load_file, save_file
from torch import nn

from models.base_originals import RESTORED
from models.lora_kohya import save_kohya

DEFAULT_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
LORA_DIR = "lora"
WEIGHTS = "pytorch_lora_weights.safetensors"
MERGE_FLAG = "_difftune_lora_merge"
KOHYA_FLAG = "_difftune_lora_kohya_prefix"  # also export kohya's format under this key prefix


def lora_config(rank: int, alpha: float | None = None, targets: list[str] | None = None) -> LoraConfig:
    return LoraConfig(r=rank, lora_alpha=alpha or rank, target_modules=list(targets or DEFAULT_TARGETS),
                      init_lora_weights="gaussian")


def apply_lora(model: nn.Module, config: LoraConfig, *, merge: bool = False,
               kohya_prefix: str | None = None) -> list[nn.Parameter]:
    """Freeze ``model``, add a LoRA adapter; return its trainable A/B parameters. ``merge`` and
    ``kohya_prefix`` say how :func:`save_lora` exports it."""
    model.requires_grad_(False)
    if hasattr(model, "add_adapter"):  # diffusers models (UNet, ControlNet): keeps their peft_config
        model.add_adapter(config)
    else:
        inject_adapter_in_model(config, model)
        model.peft_config = {"default": config}
    setattr(model, MERGE_FLAG, merge)
    setattr(model, KOHYA_FLAG, kohya_prefix)
    params = [p for n, p in model.named_parameters() if "lora_" in n]
    for p in params:
        p.requires_grad_(True)
        # fp32 adapters: peft casts them to a 4-bit base's bf16 compute dtype (get_peft_model would cast
        # them back, as its autocast_adapter_dtype does; inject_adapter_in_model does not)
        p.data = p.data.float()
    return params


def has_lora(model: nn.Module) -> bool:
    return any(isinstance(m, LoraLayer) for m in model.modules())


@torch.no_grad()
def strip_lora(model: nn.Module, *, merge: bool) -> nn.Module:
    """A copy of ``model`` with plain layers: the LoRA update merged in, or dropped."""
    plain = copy.deepcopy(model)
    for name, module in list(plain.named_modules()):
        if isinstance(module, LoraLayer):
            if merge and getattr(module.get_base_layer(), RESTORED, False):
                _merge_into_restored(module)
            elif merge:
                module.merge()
            parent_name, _, child = name.rpartition(".")
            setattr(plain.get_submodule(parent_name) if parent_name else plain, child, module.get_base_layer())
    for attr in ("peft_config", MERGE_FLAG, KOHYA_FLAG):
        plain.__dict__.pop(attr, None)
    if hasattr(plain, "_hf_peft_config_loaded"):
        plain._hf_peft_config_loaded = False
    plain.requires_grad_(True)
    return plain


def _merge_into_restored(module: LoraLayer) -> None:
    """W += ΔW on a 4-bit layer's original weights put back for export (models/memory_savers.py): peft's
    bnb layer would merge into (dequantise) the 4-bit weight it no longer has."""
    base = module.get_base_layer()
    for adapter in module.active_adapters:
        base.weight.data += module.get_delta_weight(adapter).to(base.weight.dtype)


def export_lora(model: nn.Module) -> nn.Module:
    """Plain module for a pipeline folder: merged when the adapter was applied with ``merge``."""
    return strip_lora(model, merge=bool(getattr(model, MERGE_FLAG, False))) if has_lora(model) else model


def save_lora(model: nn.Module, checkpoint: Path, prefix: str, pipeline_class=None) -> Path | None:
    """Write the adapter of ``model`` under ``checkpoint/lora`` (none: nothing written)."""
    if not has_lora(model):
        return None
    folder = Path(checkpoint) / LORA_DIR
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().float().cpu().contiguous() for k, v in get_peft_model_state_dict(model).items()}
    if pipeline_class is not None and hasattr(pipeline_class, "save_lora_weights"):
        from diffusers.utils import convert_state_dict_to_diffusers

        layers = convert_state_dict_to_diffusers(state) if prefix == "unet" else state
        pipeline_class.save_lora_weights(folder, **{f"{prefix}_lora_layers": layers})
    else:
        save_file({f"{prefix}.{k}": v for k, v in state.items()}, str(folder / WEIGHTS))
    cfg = model.peft_config["default"]
    if kohya_prefix := getattr(model, KOHYA_FLAG, None):
        save_kohya(folder, state, kohya_prefix, rank=cfg.r, alpha=cfg.lora_alpha,
                   architecture=getattr(pipeline_class, "__name__", prefix))
    (folder / "lora_config.json").write_text(json.dumps(
        {"prefix": prefix, "r": cfg.r, "lora_alpha": cfg.lora_alpha, "target_modules": sorted(cfg.target_modules),
         "merged": bool(getattr(model, MERGE_FLAG, False))}, indent=2))
    return folder


def is_merged(folder: str | Path) -> bool:
    """Whether the checkpoint's pipeline weights already hold the adapter in ``folder``."""
    return bool(json.loads((Path(folder) / "lora_config.json").read_text()).get("merged", False))


def load_lora(model: nn.Module, folder: str | Path) -> nn.Module:
    """Attach a LoRA written by :func:`save_lora` (any prefix) to ``model`` in place."""
    folder = Path(folder)
    meta = json.loads((folder / "lora_config.json").read_text())
    apply_lora(model, lora_config(meta["r"], meta["lora_alpha"], meta["target_modules"]))
    prefix = meta["prefix"] + "."
    state = {k[len(prefix):]: v for k, v in load_file(folder / WEIGHTS).items() if k.startswith(prefix)}
    result = set_peft_model_state_dict(model, state)
    if getattr(result, "unexpected_keys", None):
        raise ValueError(f"{folder}: LoRA keys do not match the model: {result.unexpected_keys[:3]}")
    return model.requires_grad_(False)


def attach_checkpoint_lora(model: nn.Module, checkpoint: str | Path, *, diffusers_format: bool) -> bool:
    """Attach the adapter a checkpoint keeps beside its pipeline (``lora/``) to ``model``, its denoiser as
    loaded from the pipeline folder, unless it was merged into that folder's weights. ``diffusers_format``:
    the adapter was written by the pipeline's ``save_lora_weights`` (SD, SDXL, SD3, Flux), else by
    :func:`save_lora` alone (DiT, ControlNet). Returns whether an adapter was attached."""
    folder = Path(checkpoint) / LORA_DIR
    if not (folder / "lora_config.json").is_file():
        return False
    meta = json.loads((folder / "lora_config.json").read_text())
    if meta.get("merged"):
        return False
    if diffusers_format:
        model.load_lora_adapter(str(folder), prefix=meta["prefix"], weight_name=WEIGHTS)
    else:
        load_lora(model, folder)
    return True
