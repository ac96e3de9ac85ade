"""LoRA in kohya's key format: the file AUTOMATIC1111, ComfyUI, SD.Next and InvokeAI users load.

A kohya LoRA names each adapted module by its path with dots replaced by underscores, behind a
prefix that says which network it adapts (``lora_unet_`` for SD/SDXL UNets; ``lora_transformer_``
for SD3 and Flux transformers, the OneTrainer form ComfyUI maps), and stores per module
``.lora_down.weight`` (peft's A), ``.lora_up.weight`` (peft's B) and a scalar ``.alpha``: the update is
(alpha / rank) · up · down, as in peft. The file's metadata carries the ``ss_*`` fields those tools show.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

KOHYA_WEIGHTS = "pytorch_lora_weights_kohya.safetensors"
_PEFT_TO_KOHYA = {"lora_A.weight": "lora_down.weight", "lora_B.weight": "lora_up.weight"}


def to_kohya(peft_state: dict[str, torch.Tensor], prefix: str, alpha: float) -> dict[str, torch.Tensor]:
    """peft adapter weights (``path.lora_A.weight`` …) → kohya keys under ``prefix`` (e.g. ``lora_unet``)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in peft_state.items():
        module, _, part = key.partition(".lora_")
        kohya_part = _PEFT_TO_KOHYA.get(f"lora_{part}")
        if kohya_part is None:
            raise ValueError(f"LoRA key {key!r} has no kohya equivalent (only lora_A/lora_B weights do)")
        name = f"{prefix}_{module.replace('.', '_')}"
        out[f"{name}.{kohya_part}"] = value.detach().float().cpu().contiguous()
        out.setdefault(f"{name}.alpha", torch.tensor(float(alpha)))
    return out


def from_kohya(kohya_state: dict[str, torch.Tensor], prefix: str, module_names: list[str]
               ) -> tuple[dict[str, torch.Tensor], float]:
    """kohya keys → (peft adapter weights, alpha), resolving names against the model's ``module_names``
    (underscores are ambiguous: ``down_blocks`` is one name, ``down.blocks`` would be two)."""
    by_kohya = {f"{prefix}_{name.replace('.', '_')}": name for name in module_names}
    state, alphas = {}, set()
    for key, value in kohya_state.items():
        kohya_name, _, part = key.partition(".")
        if kohya_name not in by_kohya:
            raise ValueError(f"LoRA key {key!r} names no module of the model")
        if part == "alpha":
            alphas.add(float(value))
            continue
        peft_part = {v: k for k, v in _PEFT_TO_KOHYA.items()}[part]
        state[f"{by_kohya[kohya_name]}.{peft_part}"] = value
    if len(alphas) != 1:
        raise ValueError(f"expected one alpha for every module, found {sorted(alphas)}")
    return state, alphas.pop()


def save_kohya(folder: Path, peft_state: dict[str, torch.Tensor], prefix: str, *, rank: int, alpha: float,
               architecture: str) -> Path:
    """Write ``folder/pytorch_lora_weights_kohya.safetensors`` with the metadata kohya's tools read."""
    path = Path(folder) / KOHYA_WEIGHTS
    metadata = {"ss_network_module": "networks.lora", "ss_network_dim": str(rank), "ss_network_alpha": str(alpha),
                "ss_base_model_version": architecture, "modelspec.architecture": f"{architecture}/lora"}
    save_file(to_kohya(peft_state, prefix, alpha), str(path), metadata=metadata)
    return path
