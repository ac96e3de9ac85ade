"""The memory savers a TrainConfig switches on: the optimizer (8-bit AdamW) and a frozen base held in
less memory than fp32 (``base_precision``), whose original weights are still what checkpoints export.

``base_precision`` (peft lora or difffit; nf4 with lora only), bytes per frozen weight:

* ``bf16`` (2): every frozen floating tensor cast to bf16.
* ``fp8`` (1): the frozen tensors of the Linear and Conv layers that diffusers' layerwise casting
  (``ModelMixin.enable_layerwise_casting``) would cast are stored in float8_e4m3fn, the rest in bf16.
  The layers are chosen as diffusers chooses them (its default skip patterns plus the model's
  ``_skip_layerwise_casting_patterns`` and ``_keep_in_fp32_modules``: norms, positional and patch
  embeddings, top-level proj_in/proj_out stay bf16; LoRA's A/B train in fp32), and computed as its
  ``LayerwiseCastingHook`` computes them: upcast to bf16 per layer as the layer runs. Not with that
  hook itself, which fails three ways in training (each reproduced on the tiny SD UNet with LoRA):
  it swaps the parameters' data in place, so a Conv's weight that autograd saved in bf16 is fp8 when
  gradient checkpointing recomputes it (torch's CheckpointError); its ``forward`` wrapper is a closure
  that a ``copy.deepcopy`` of the model keeps calling on the *original* layer (the trainer's EMA and
  sampling copies fail: "mat1 and mat2 must have the same dtype"); and it casts every parameter of a
  layer, which would turn DiffFit's trained fp32 biases into fp8. Here each frozen tensor is a torch
  parametrization (:class:`Fp8Storage`) that hands the layer a fresh bf16 tensor (the autocast dtype;
  without autocast, as on the CPU sampling copies made fp32, the tensor as it is), so nothing stored
  changes under autograd, recomputation or copies. Autograd keeps each layer's bf16 copy for the
  backward pass, so fp8 only saves memory with gradient checkpointing (which recomputes a block's
  layers in the backward pass): the config requires it.
* ``nf4`` (~0.5 + quant state): QLoRA. Every ``nn.Linear`` inside a transformer block
  (``transformer_blocks.N.`` / ``single_transformer_blocks.N.``: attention projections, feed-forward,
  the blocks' modulation linears) becomes a bitsandbytes ``Linear4bit`` (NF4, double quantisation,
  bf16 compute) *before* LoRA is added, so peft wraps it with its bnb LoRA layer; everything else
  (convolutions, time/text embeddings, norms, proj_in/proj_out, the output layers) is held in bf16.
  diffusers' and transformers' ``BitsAndBytesConfig`` quantise while loading and need a GPU, so the
  loaded model's layers are replaced with bitsandbytes' own class here.

Original weights: checkpoints export the base's original tensors, not these approximations
(:mod:`models.base_originals`: :func:`keep_originals` at hold time, :func:`restore_base` at export).

Resume (the trainer's ``module.state_dict()`` / ``load_state_dict(strict=True)``): an fp8 tensor's key
is its parametrization's (``….parametrizations.weight.original``), the same in every run of the config;
a ``Linear4bit``'s state dict carries its quantisation statistics (``weight.absmax``, ...), which
bitsandbytes writes but does not read back: a load pre-hook registered here takes them back.

The EMA's device is the EMA's own option (``models/ema.py``); gradient checkpointing is the
denoiser's (diffusers' ``enable_gradient_checkpointing``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator

import torch
from torch import nn

from contract.train_config import TrainConfig
from models.base_originals import keep_originals

log = logging.getLogger(__name__)

BASE_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp8": torch.bfloat16, "nf4": torch.bfloat16}
"""The dtype of the frozen tensors that no lower storage (fp8 layers, nf4 linears) takes."""
FP8 = torch.float8_e4m3fn
COMPUTE = torch.bfloat16
NF4_BLOCKS = re.compile(r"(^|\.)(single_)?transformer_blocks\.\d+\.")
_FP8_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
               nn.ConvTranspose3d)


def build_optimizer(params: list[nn.Parameter], config: TrainConfig, device: str) -> torch.optim.Optimizer:
    """AdamW over ``params`` as ``config.optimizer`` says (torch's, fused on CUDA, or bitsandbytes' 8-bit)."""
    options = dict(lr=config.learning_rate, betas=(config.adam_beta1, config.adam_beta2),
                   weight_decay=config.weight_decay)
    if config.optimizer == "adamw_8bit":
        try:
            import bitsandbytes as bnb
        except ImportError as err:  # pragma: no cover - an install without the ml extra's bitsandbytes
            raise ValueError(f"optimizer: adamw_8bit needs bitsandbytes ({err})") from None
        return bnb.optim.AdamW8bit(params, **options)
    return torch.optim.AdamW(params, fused=device.startswith("cuda"), **options)


def check_compute(config: TrainConfig, bf16_compute: bool) -> None:
    """A base held below fp32 needs bf16 autocast (fp32 inputs cannot meet bf16 weights)."""
    if config.base_precision != "fp32" and not bf16_compute:
        raise ValueError(f"base_precision: a {config.base_precision} base needs bf16 compute, which "
                         "mixed_precision: auto only uses on CUDA; set mixed_precision: bf16 to train it on "
                         "this device")


# --- the frozen base ---------------------------------------------------------------------------------
def prepare_base(model: nn.Module, config: TrainConfig) -> None:
    """Before LoRA is added (after DiffFit chose its trainable tensors): note where the frozen tensors'
    original values are, and with nf4 quantise the transformer blocks' linears."""
    if config.base_precision == "fp32":
        return
    keep_originals(model, config.base_model)
    if config.base_precision == "nf4":
        quantise_nf4(model)


@torch.no_grad()
def hold_frozen_base(module: nn.Module, precision: str) -> None:
    """Cast the parameters that do not train to ``precision``: fp8 stores the layers diffusers'
    layerwise casting would take in fp8 (cast from their fp32 values) and the rest in bf16, as bf16 and
    nf4 do (nf4's 4-bit linears are no floating tensors)."""
    from torch.nn.utils import parametrize

    layers = fp8_layers(module) if precision == "fp8" else []
    for layer in layers:
        for name, param in list(layer.named_parameters(recurse=False)):
            if not param.requires_grad:
                param.data = param.data.to(FP8)
                parametrize.register_parametrization(layer, name, Fp8Storage(), unsafe=True)
    dtype = BASE_DTYPES[precision]
    for param in module.parameters():
        if not param.requires_grad and param.is_floating_point() and param.dtype not in (dtype, FP8):
            param.data = param.data.to(dtype)
    if any(not p.requires_grad for p in module.parameters()) and not getattr(module, _ADOPTS, False):
        module.register_load_state_dict_pre_hook(_adopt_held_base)
        setattr(module, _ADOPTS, True)


_ADOPTS = "_difftune_adopts_held_base"
_STATISTICS = re.compile(r"\.(absmax|quant_map|nested_absmax|nested_quant_map|quant_state\.bitsandbytes__\w+)$")


def _base_name(key: str) -> str:
    """A frozen tensor's state-dict key as a plain model has it (fp8 parametrization and 4-bit statistics
    keys folded into their weight's)."""
    return _STATISTICS.sub("", key).replace(".parametrizations.", ".").removesuffix(".original")


def _adopt_held_base(module: nn.Module, state_dict: dict, prefix: str, *_args) -> None:
    """Load pre-hook of a model with a frozen base: a checkpoint written under another ``base_precision``
    (the service lets a resumed job change it, e.g. after running out of memory) holds the same frozen
    tensors in another layout (fp8 parametrizations, packed 4-bit weights and their statistics) or dtype.
    The frozen base never trains and every run rebuilds it from the base model, so then the module keeps
    its own and only the trained tensors load. The same layout loads as it is; a different model (other
    tensors) is left for ``load_state_dict`` to refuse."""
    trained = {prefix + n for n, p in module.named_parameters() if p.requires_grad}
    own = {prefix + k: v for k, v in module.state_dict().items() if prefix + k not in trained}
    theirs = {k: v for k, v in state_dict.items() if k.startswith(prefix) and k not in trained}
    same = own.keys() == theirs.keys() and all(
        (own[k].shape, own[k].dtype) == (theirs[k].shape, theirs[k].dtype) for k in own)
    if same or {_base_name(k) for k in own} != {_base_name(k) for k in theirs}:
        return
    for key in theirs:
        del state_dict[key]
    state_dict.update(own)


# --- fp8 storage -------------------------------------------------------------------------------------
def fp8_layers(model: nn.Module) -> list[nn.Module]:
    """The layers with frozen weights that ``ModelMixin.enable_layerwise_casting`` would cast: Linear and
    Conv layers outside diffusers' skip patterns (defaults and the model's own); LoRA's A/B matrices
    (trainable) are not among them."""
    from diffusers.hooks.layerwise_casting import DEFAULT_SKIP_MODULES_PATTERN

    skip = (*DEFAULT_SKIP_MODULES_PATTERN, *(getattr(model, "_keep_in_fp32_modules", None) or ()),
            *(getattr(model, "_skip_layerwise_casting_patterns", None) or ()))

    def walk(module: nn.Module, prefix: str) -> Iterator[nn.Module]:
        if prefix and any(re.search(pattern, prefix) for pattern in skip):
            return
        if isinstance(module, _FP8_LAYERS):
            if any(not p.requires_grad for p in module.parameters(recurse=False)):
                yield module
            return
        for name, child in module.named_children():
            yield from walk(child, f"{prefix}.{name}" if prefix else name)

    return list(walk(model, ""))


class Fp8Storage(nn.Module):
    """Parametrization of a frozen tensor stored in fp8: the layer reads it in the autocast dtype (bf16),
    or without autocast in bf16 from fp8 and as it is otherwise (the CPU sampling copies, made fp32).
    A fresh tensor per read, so the stored one never changes under autograd or checkpoint recomputation."""

    def forward(self, stored: torch.Tensor) -> torch.Tensor:
        device = stored.device.type
        if torch.is_autocast_enabled(device):
            return stored.to(torch.get_autocast_dtype(device))
        return stored.to(COMPUTE) if stored.dtype == FP8 else stored


def _remove_fp8_storage(model: nn.Module) -> None:
    """Plain layers again, holding their stored tensors (on a copy: torch's ``remove_parametrizations``
    would delete the property from the parametrized class, which a deep copy shares with the original)."""
    from torch.nn.utils import parametrize

    for module in list(model.modules()):
        if parametrize.is_parametrized(module) and all(
                isinstance(p, Fp8Storage) for plist in module.parametrizations.values() for p in plist):
            stored = {name: plist.original for name, plist in module.parametrizations.items()}
            del module._modules["parametrizations"]
            module.__class__ = module.__class__.__bases__[0]  # the layer's own class, under parametrize's
            for name, tensor in stored.items():
                module.register_parameter(name, tensor)


# --- nf4 (QLoRA) -------------------------------------------------------------------------------------
@torch.no_grad()
def quantise_nf4(model: nn.Module) -> int:
    """Replace every frozen ``nn.Linear`` inside a transformer block with bitsandbytes' ``Linear4bit``
    (NF4, double quantisation, bf16 compute), quantised on the layer's device; returns how many."""
    import bitsandbytes as bnb

    count = 0
    for name, layer in list(model.named_modules()):
        if type(layer) is not nn.Linear or not NF4_BLOCKS.search(name + ".") or layer.weight.requires_grad:
            continue
        device = layer.weight.device
        quantised = bnb.nn.Linear4bit(layer.in_features, layer.out_features, bias=layer.bias is not None,
                                      compute_dtype=COMPUTE, compress_statistics=True, quant_type="nf4",
                                      device="meta")
        quantised.weight = bnb.nn.Params4bit(layer.weight.data, requires_grad=False, compress_statistics=True,
                                             quant_type="nf4", module=quantised)
        quantised.bias = None if layer.bias is None else nn.Parameter(layer.bias.data, requires_grad=False)
        quantised = quantised.to(device)  # bitsandbytes quantises on the move to a device
        if layer.out_features % 32 or layer.in_features % quantised.weight.blocksize:
            # bitsandbytes' CPU inference path repacks the 4-bit weight in blocks its shape must divide into
            # (it fails on others, e.g. the tiny test models' 32-wide layers): those compute unpacked
            quantised.support_avx512bf16_for_cpu = False
        quantised.register_load_state_dict_pre_hook(_load_quant_state)
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, quantised)
        count += 1
    if count:
        model.is_loaded_in_4bit = True  # what peft reads to wrap Linear4bit layers with its bnb LoRA layer
    return count


def _load_quant_state(layer: nn.Module, state_dict: dict, prefix: str, *_args) -> None:
    """Load pre-hook of a Linear4bit: its state dict's ``weight.absmax``, ``weight.quant_map``, ... entries
    (which bitsandbytes writes but does not read back) become the layer's quantisation state."""
    from bitsandbytes.functional import QuantState

    head = prefix + "weight."
    stats = {key[len(head):]: state_dict.pop(key) for key in [k for k in state_dict if k.startswith(head)]}
    if stats:
        state = QuantState.from_dict(stats, device=layer.weight.device)
        layer.weight.quant_state = layer.quant_state = state


def quant_state_bytes(model: nn.Module) -> int:
    """Bytes of the 4-bit layers' quantisation statistics (absmax, double-quantised, and code tables)."""
    total = 0
    for module in model.modules():
        state = getattr(module, "quant_state", None)  # a Linear4bit's (also on its weight)
        if state is not None and hasattr(state, "as_dict"):
            total += sum(t.numel() * t.element_size() for t in state.as_dict(packed=True).values()
                         if torch.is_tensor(t))
    return total


def param_count(model: nn.Module) -> int:
    """Weights of ``model`` as the base has them (a 4-bit matrix by its shape, not its packed bytes)."""
    total = 0
    for module in model.modules():
        state = getattr(module, "quant_state", None)
        for name, param in module.named_parameters(recurse=False):
            packed = state is not None and name == "weight" and param.dtype == torch.uint8
            total += state.shape.numel() if packed else param.numel()
    return total


def _linear4bit() -> type | None:
    try:
        import bitsandbytes as bnb
    except ImportError:  # pragma: no cover - an install without the ml extra's bitsandbytes holds no 4-bit layer
        return None
    return bnb.nn.Linear4bit
