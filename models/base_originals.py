"""The original weights of a frozen base held in less memory (``base_precision`` bf16 / fp8 / nf4).

Before any tensor is cast, each frozen one is looked up in the base model's safetensors files (the folder
or hub cache of ``base_model``, the denoiser's own component folder first) and kept as a (file, key)
reference when the file holds exactly that tensor — no host memory; a tensor found nowhere (a model built
in memory, a layer the family changed after loading) is kept as a host copy instead, with a warning
(benchmarks of models built in memory opt out with :func:`hold_without_originals`). :func:`restore_base`
puts them back for export, so a checkpoint's pipeline holds the real base (plus the merged LoRA with
``lora_merge``), never a bf16/fp8/nf4 approximation of it; the cost is reading the base's files once more
at start-up (to check that they hold what was loaded) and at each export. How the base is held:
:mod:`models.memory_savers`.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)

ORIGINALS = "_difftune_base_originals"
WITHOUT_ORIGINALS = "_difftune_base_not_exported"
RESTORED = "_difftune_restored_from_4bit"  # a plain nn.Linear that replaced a Linear4bit on export


def hold_without_originals(module: nn.Module) -> nn.Module:
    """Hold ``module``'s base without keeping its original weights (benchmarks of models built in memory,
    never saved): no host copy is made, and :func:`restore_base` refuses to export it."""
    setattr(module, WITHOUT_ORIGINALS, True)
    return module


@dataclass
class BaseOriginals:
    """Where the original values of a held base's frozen tensors are: ``files`` (name -> safetensors file
    and key holding exactly that tensor) or ``kept`` host copies; ``dtypes`` as the model had them.
    Shared, not copied, by copies of the model (the trainer's EMA and sampling copies)."""

    files: dict[str, tuple[str, str]] = field(default_factory=dict)
    kept: dict[str, torch.Tensor] = field(default_factory=dict)
    dtypes: dict[str, torch.dtype] = field(default_factory=dict)
    exportable: bool = True

    def __deepcopy__(self, memo) -> BaseOriginals:
        return self

    def values(self) -> Iterator[tuple[str, torch.Tensor]]:
        """(name, original tensor) on the host, one file-backed tensor read at a time."""
        from safetensors import safe_open

        for name, tensor in self.kept.items():
            yield name, tensor.clone()  # the export may change it (merges), the next export needs it again
        by_file: dict[str, list[str]] = {}
        for name, (path, _key) in self.files.items():
            by_file.setdefault(path, []).append(name)
        for path, names in by_file.items():
            with safe_open(path, framework="pt") as weights:
                for name in names:
                    yield name, weights.get_tensor(self.files[name][1]).to(self.dtypes[name])


def _local_folder(location: str) -> Path | None:
    if not location:
        return None
    if Path(location).is_dir():
        return Path(location)
    try:  # a hub id: the snapshot the family was loaded from, already in the cache
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(location, local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached, not a repo id: no files to refer to
        return None


def _weight_files(model: nn.Module, location: str) -> list[Path]:
    """The base's safetensors files, the model's own component folder (its config's class) first and
    unsuffixed files before variants (``*.fp16.safetensors``)."""
    import json

    root = _local_folder(location)
    if root is None:
        return []

    def own(folder: Path) -> bool:
        try:
            return json.loads((folder / "config.json").read_text()).get("_class_name") == type(model).__name__
        except (OSError, ValueError):
            return False

    folders = [root, *sorted(p for p in root.iterdir() if p.is_dir())]
    folders.sort(key=lambda f: not own(f))
    return [file for folder in folders
            for file in sorted(folder.glob("*.safetensors"), key=lambda f: (f.name.count(".") > 1, f.name))]


@torch.no_grad()
def keep_originals(model: nn.Module, location: str) -> BaseOriginals:
    """Record, for every frozen floating tensor of ``model``, where its present value can be read back."""
    from safetensors import safe_open

    if getattr(model, WITHOUT_ORIGINALS, False):
        originals = BaseOriginals(exportable=False)
        setattr(model, ORIGINALS, originals)
        return originals
    frozen = {n: p for n, p in model.named_parameters() if not p.requires_grad and p.is_floating_point()}
    originals = BaseOriginals(dtypes={n: p.dtype for n, p in frozen.items()})
    files = _weight_files(model, location)
    index: dict[str, list[Path]] = {}
    opened = {}
    try:
        for path in files:
            opened[path] = safe_open(str(path), framework="pt")
            for key in opened[path].keys():
                index.setdefault(key, []).append(path)
        for name, param in frozen.items():
            for path in index.get(name, []):
                value = opened[path].get_tensor(name)
                if value.shape == param.shape and torch.equal(value.to(param.device).to(param.dtype), param):
                    originals.files[name] = (str(path), name)
                    break
            else:
                originals.kept[name] = param.detach().to("cpu", copy=True)
    finally:
        opened.clear()
    if originals.kept:
        size = sum(t.numel() * t.element_size() for t in originals.kept.values())
        log.warning("base_precision: %d frozen tensors (%.2f GB) are not in the base model's files at %r; "
                    "host copies of them are kept for the checkpoints' exact base weights",
                    len(originals.kept), size / 2**30, location)
    setattr(model, ORIGINALS, originals)
    return originals


@torch.no_grad()
def restore_base(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with its frozen tensors back at their original values and dtypes: fp8 layers
    plain again, Linear4bit layers replaced by ``nn.Linear`` (marked for :func:`models.lora.strip_lora`,
    which then merges LoRA into these weights); ``model`` itself when its base was never held."""
    originals: BaseOriginals | None = getattr(model, ORIGINALS, None)
    if originals is None:
        return model
    if not originals.exportable:
        raise ValueError("base_precision: this model's base was held without its original weights "
                         "(hold_without_originals) and cannot be exported")
    from models.memory_savers import _remove_fp8_storage

    model = copy.deepcopy(model)
    _remove_fp8_storage(model)
    for name, value in originals.values():
        _put_back(model, name, value)
    for attr in (ORIGINALS, "is_loaded_in_4bit"):
        model.__dict__.pop(attr, None)
    return model


def _put_back(model: nn.Module, name: str, value: torch.Tensor) -> None:
    from peft.tuners.tuners_utils import BaseTunerLayer

    path, _, attr = name.rpartition(".")
    layer = model.get_submodule(path) if path else model
    wrapper = layer if isinstance(layer, BaseTunerLayer) else None  # LoRA was added after the name was read
    if wrapper is not None:
        layer = wrapper.get_base_layer()
    from models.memory_savers import _linear4bit

    device = getattr(layer, attr).device
    linear4bit = _linear4bit()
    if linear4bit is not None and isinstance(layer, linear4bit):
        plain = nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None, device="meta")
        plain.weight = nn.Parameter(torch.empty(plain.weight.shape, dtype=value.dtype, device=device),
                                    requires_grad=False)
        if layer.bias is not None:
            plain.bias = nn.Parameter(layer.bias.detach().to(device, value.dtype), requires_grad=False)
        setattr(plain, RESTORED, True)
        if wrapper is not None:
            wrapper.base_layer = plain
        else:
            parent, _, child = path.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child, plain)
        layer = plain
    setattr(layer, attr, nn.Parameter(value.to(device), requires_grad=False))
