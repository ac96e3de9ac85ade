"""A small CNN trained on real images of the target domain, used as an offline FD feature extractor.

Inception-v3 needs downloaded weights and knows ImageNet, not (say) 32x32 digits. This module trains a
small classifier on class-labelled real images of the target domain (a minute on a CPU for a few
thousand 32x32 images) and uses its penultimate layer as features, and its logits for class fidelity.
It is saved as ``model.safetensors`` plus a small ``config.json`` (architecture, classes, training
metadata), and training is deterministic under a seed without touching the global RNG.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from models.evaluation.extractor import ModuleFeatureExtractor, check_images, resolve_device

__all__ = [
    "DomainClassifier",
    "DomainClassifierConfig",
    "DomainTrainResult",
    "domain_feature_extractor",
    "load_domain_classifier",
    "save_domain_classifier",
    "train_domain_classifier",
]

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
FORMAT_VERSION = 1


#################################################################################
#                                     Model                                     #
#################################################################################


@dataclass
class DomainClassifierConfig:
    """Architecture of a :class:`DomainClassifier`; stored as JSON next to the weights."""

    num_classes: int
    image_size: int = 32
    width: int = 32
    num_stages: int = 3
    feature_dim: int = 128
    class_names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2; got {self.num_classes}")
        if self.image_size < 2**self.num_stages:
            raise ValueError(f"image_size {self.image_size} is too small for {self.num_stages} stages")
        if self.class_names and len(self.class_names) != self.num_classes:
            raise ValueError(f"{len(self.class_names)} class_names for {self.num_classes} classes")


class DomainClassifier(nn.Module):
    """Conv stages (conv3x3-BN-ReLU-maxpool, width doubling) -> global pool -> feature MLP -> head.

    Takes images (N, 3, H, W) in [0, 1] (resized to ``image_size``); :meth:`features` returns the
    penultimate layer (N, feature_dim), :meth:`forward` the logits (N, num_classes).
    """

    def __init__(self, config: DomainClassifierConfig) -> None:
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        channels_in = 3
        for stage in range(config.num_stages):
            channels_out = config.width * 2**stage
            layers += [
                nn.Conv2d(channels_in, channels_out, kernel_size=3, padding=1, bias=False),
                nn.BatchNorm2d(channels_out),
                nn.ReLU(),
                nn.MaxPool2d(2),
            ]
            channels_in = channels_out
        self.stages = nn.Sequential(*layers)
        self.embed = nn.Sequential(nn.Linear(channels_in, config.feature_dim), nn.ReLU())
        self.head = nn.Linear(config.feature_dim, config.num_classes)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Resize to ``image_size`` (bilinear, antialiased when shrinking) and map [0, 1] -> [-1, 1]."""
        size = self.config.image_size
        if images.shape[-2:] != (size, size):
            shrink = images.shape[-1] > size or images.shape[-2] > size
            images = F.interpolate(images, size=(size, size), mode="bilinear", antialias=shrink)
        return 2 * images - 1  # (N, 3, S, S)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.preprocess(images))  # (N, C, S / 2^k, S / 2^k)
        x = x.mean(dim=(2, 3))  # (N, C)
        return self.embed(x)  # (N, feature_dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))  # (N, num_classes)


class _FeatureHead(nn.Module):
    """Exposes :meth:`DomainClassifier.features` as a module's forward."""

    def __init__(self, classifier: DomainClassifier) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier.features(images)  # (N, feature_dim)


def domain_feature_extractor(
    classifier: DomainClassifier, *, batch_size: int = 256, device: str | torch.device | None = None
) -> ModuleFeatureExtractor:
    """A FeatureExtractor giving the classifier's penultimate features (N, feature_dim)."""
    return ModuleFeatureExtractor(
        _FeatureHead(classifier), classifier.config.feature_dim, batch_size=batch_size, device=device
    )


#################################################################################
#                                   Training                                    #
#################################################################################


@dataclass
class DomainTrainResult:
    """A trained classifier and its training record (per-epoch loss and accuracy)."""

    model: DomainClassifier
    epoch_loss: list[float]
    epoch_accuracy: list[float]
    val_accuracy: float | None
    seed: int

    def metadata(self) -> dict[str, Any]:
        """JSON-safe summary saved with the weights."""
        return {
            "seed": self.seed,
            "epochs": len(self.epoch_loss),
            "final_train_loss": self.epoch_loss[-1] if self.epoch_loss else None,
            "final_train_accuracy": self.epoch_accuracy[-1] if self.epoch_accuracy else None,
            "val_accuracy": self.val_accuracy,
        }


def _random_shift(images: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image by up to ``max_shift`` pixels (replicate padding), a label-safe augmentation."""
    if max_shift == 0:
        return images
    n, _, h, w = images.shape
    padded = F.pad(images, (max_shift,) * 4, mode="replicate")  # (N, 3, H + 2s, W + 2s)
    offsets = torch.randint(0, 2 * max_shift + 1, (n, 2), generator=generator)  # (N, 2)
    return torch.stack(
        [padded[i, :, dy : dy + h, dx : dx + w] for i, (dy, dx) in enumerate(offsets.tolist())]
    )  # (N, 3, H, W)


def _accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int) -> float:
    """Top-1 accuracy in eval mode (images and labels already on the model's device)."""
    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, images.shape[0], batch_size):
            logits = model(images[start : start + batch_size])  # (B, K)
            correct += int((logits.argmax(dim=1) == labels[start : start + batch_size]).sum())
    return correct / images.shape[0]


def train_domain_classifier(
    images: torch.Tensor,
    labels: torch.Tensor | Sequence[int],
    *,
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
    image_size: int = 32,
    width: int = 32,
    feature_dim: int = 128,
    epochs: int = 10,
    batch_size: int = 64,
    lr: float = 2e-3,
    weight_decay: float = 1e-4,
    max_shift: int = 2,
    val_images: torch.Tensor | None = None,
    val_labels: torch.Tensor | Sequence[int] | None = None,
    seed: int = 0,
    device: str | torch.device | None = "cpu",
    progress: Callable[[int, float, float], None] | None = None,
) -> DomainTrainResult:
    """Train a :class:`DomainClassifier` on real images (N, C, H, W) in [0, 1] with labels 0..K-1.

    AdamW with a cosine learning-rate decay, random shifts of up to ``max_shift`` pixels as the only
    augmentation (no flips: they are not label-safe for digits or text). Initialisation, shuffling and
    augmentation all derive from ``seed`` (the global RNG is left as it was), so two runs on the same
    device give identical weights. ``progress(epoch, loss, accuracy)`` is called after each epoch.
    """
    images = check_images(images).float()  # (N, 3, H, W)
    labels = torch.as_tensor(labels, dtype=torch.long).flatten()  # (N,)
    if labels.shape[0] != images.shape[0]:
        raise ValueError(f"{images.shape[0]} images but {labels.shape[0]} labels")
    if int(labels.min()) < 0:
        raise ValueError("labels must be >= 0")
    num_classes = int(labels.max()) + 1 if num_classes is None else num_classes
    if int(labels.max()) >= num_classes:
        raise ValueError(f"label {int(labels.max())} out of range for num_classes={num_classes}")
    config = DomainClassifierConfig(
        num_classes=num_classes,
        image_size=image_size,
        width=width,
        feature_dim=feature_dim,
        class_names=list(class_names or []),
    )
    device = resolve_device(device)
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DomainClassifier(config).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(images.shape[0] / batch_size)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs * steps_per_epoch))

    epoch_loss: list[float] = []
    epoch_accuracy: list[float] = []
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(images.shape[0], generator=generator)  # (N,)
        total_loss, correct = 0.0, 0
        for start in range(0, images.shape[0], batch_size):
            idx = order[start : start + batch_size]  # (B,)
            x = _random_shift(images[idx], max_shift, generator).to(device)  # (B, 3, H, W)
            y = labels[idx].to(device)  # (B,)
            logits = model(x)  # (B, K)
            loss = F.cross_entropy(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total_loss += loss.item() * idx.shape[0]
            correct += int((logits.argmax(dim=1) == y).sum())
        epoch_loss.append(total_loss / images.shape[0])
        epoch_accuracy.append(correct / images.shape[0])
        if progress is not None:
            progress(epoch, epoch_loss[-1], epoch_accuracy[-1])

    val_accuracy = None
    if val_images is not None and val_labels is not None:
        val_x = check_images(val_images).float().to(device)  # (M, 3, H, W)
        val_y = torch.as_tensor(val_labels, dtype=torch.long).flatten().to(device)  # (M,)
        val_accuracy = _accuracy(model, val_x, val_y, batch_size=256)
    model.eval()
    return DomainTrainResult(model, epoch_loss, epoch_accuracy, val_accuracy, seed)


#################################################################################
#                                  Save / load                                  #
#################################################################################


def save_domain_classifier(
    model: DomainClassifier, directory: str | os.PathLike, *, metadata: dict[str, Any] | None = None
) -> Path:
    """Write ``model.safetensors`` and ``config.json`` (architecture + JSON-safe metadata) to ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(directory / WEIGHTS_NAME), metadata={"format": "pt"})
    document = {
        "format_version": FORMAT_VERSION,
        "architecture": "DomainClassifier",
        "config": asdict(model.config),
        "metadata": metadata or {},
    }
    (directory / CONFIG_NAME).write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    return directory


def load_domain_classifier(
    directory: str | os.PathLike, *, device: str | torch.device = "cpu"
) -> tuple[DomainClassifier, dict[str, Any]]:
    """Load a classifier saved by :func:`save_domain_classifier`; returns (model in eval mode, metadata)."""
    directory = Path(directory)
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"domain classifier file missing: {directory / name}")
    document = json.loads((directory / CONFIG_NAME).read_text())
    if document.get("architecture") != "DomainClassifier":
        raise ValueError(f"{directory / CONFIG_NAME} does not describe a DomainClassifier")
    if document.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(f"{directory} was saved by a newer format (version {document['format_version']})")
    model = DomainClassifier(DomainClassifierConfig(**document["config"]))
    model.load_state_dict(load_file(str(directory / WEIGHTS_NAME)), strict=True)
    return model.to(device).eval(), document.get("metadata", {})
