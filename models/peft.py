"""Parameter-efficient tuning: DiffFit (biases, norms, label embeddings and a per-block scale γ),
and the dispatch between full tuning, DiffFit and LoRA (models/lora.py).

DiffFit (Xie et al., 2023) freezes a DiT except its bias terms, normalisation parameters and class
embedding, and inserts a learnable scale γ (initialised to 1) on each block's attention and MLP
residual branch. γ scales the output of a linear layer, so it folds exactly into that layer's
weight and bias on export: the saved checkpoint is a plain diffusers model.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

GAMMA = "difffit_gamma"
_NORMS = (nn.LayerNorm, nn.GroupNorm)


def _branches(model: nn.Module):
    """Attention and feed-forward branches of every transformer block."""
    for module in model.modules():
        attn, ff = getattr(module, "attn1", None), getattr(module, "ff", None)
        if isinstance(attn, nn.Module) and isinstance(ff, nn.Module):
            yield attn
            yield ff


def _scale_by_gamma(module: nn.Module, _inputs, output):
    """Forward hook: scale a branch's output by its own γ (survives deepcopy of the model)."""
    return output * getattr(module, GAMMA).to(output.dtype)


def apply_difffit(model: nn.Module) -> list[nn.Parameter]:
    """Add γ scales and freeze everything but DiffFit's parameters; return the trainable ones."""
    for branch in _branches(model):
        if not hasattr(branch, GAMMA):
            device = next(branch.parameters()).device
            branch.register_parameter(GAMMA, nn.Parameter(torch.ones((), device=device)))
            branch.register_forward_hook(_scale_by_gamma)
    model.requires_grad_(False)
    for name, param in model.named_parameters():
        if name.endswith(".bias") or name.endswith(GAMMA) or "class_embedder" in name:
            param.requires_grad_(True)
    for module in model.modules():
        if isinstance(module, _NORMS):
            for param in module.parameters(recurse=False):
                param.requires_grad_(True)
    return [p for p in model.parameters() if p.requires_grad]


def _last_linear(module: nn.Module) -> nn.Linear:
    to_out = getattr(module, "to_out", None)  # diffusers Attention: to_out = [Linear, Dropout]
    if isinstance(to_out, nn.ModuleList) and isinstance(to_out[0], nn.Linear):
        return to_out[0]
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"DiffFit: no linear layer to fold γ into in {type(module).__name__}")
    return linears[-1]


@torch.no_grad()
def merge_difffit(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every γ folded into its branch's output projection and removed."""
    merged = copy.deepcopy(model)
    for branch in list(_branches(merged)):
        if not hasattr(branch, GAMMA):
            continue
        gamma = getattr(branch, GAMMA).detach()
        out = _last_linear(branch)
        out.weight.mul_(gamma)
        if out.bias is not None:
            out.bias.mul_(gamma)
        for key, hook in list(branch._forward_hooks.items()):
            if hook is _scale_by_gamma:
                del branch._forward_hooks[key]
        delattr(branch, GAMMA)
    merged.requires_grad_(True)
    return merged


def prepare_trainable(model: nn.Module, config) -> list[nn.Parameter]:
    """Set up ``config.peft`` (full | difffit | lora) on ``model``; return the parameters to optimise."""
    from models.memory_savers import prepare_base

    if config.peft == "difffit":
        params = apply_difffit(model)
        prepare_base(model, config)  # the originals of what stays frozen
        return params
    if config.peft == "lora":
        from models.lora import apply_lora, lora_config

        model.requires_grad_(False)  # the whole base is frozen under LoRA
        prepare_base(model, config)  # before LoRA: nf4 layers then get peft's bnb LoRA layer
        cfg = lora_config(config.lora_rank, config.lora_alpha, config.lora_target_modules)
        from contract.families import family

        kohya = family(config.family).kohya_prefix if config.lora_format == "kohya" else None
        return apply_lora(model, cfg, merge=config.lora_merge, kohya_prefix=kohya)
    model.requires_grad_(True)
    return list(model.parameters())


def export_trainable(model: nn.Module) -> nn.Module:
    """A plain diffusers module: the frozen base back at its original weights when it was held in less
    (models/memory_savers.py), DiffFit γ folded in, LoRA merged or dropped (see models/lora.py)."""
    from models.base_originals import restore_base
    from models.lora import export_lora

    model = restore_base(model)
    if any(p.dtype != torch.float32 for p in model.parameters() if p.is_floating_point()):
        model = copy.deepcopy(model).float()  # a model loaded in bf16 is merged and exported in fp32
    return export_lora(merge_difffit(model))
