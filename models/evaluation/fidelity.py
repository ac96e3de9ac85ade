"""Class fidelity of a class-conditional generator: does a classifier recognise the asked-for class?

Generate samples per label, classify them (e.g. with the domain classifier of
:mod:`models.evaluation.domain_features`, trained on real target images), and report the accuracy
overall and per class. Map generator labels to the classifier's label ids before calling, if they differ.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from models.evaluation.extractor import check_images, resolve_device

__all__ = ["ClassFidelity", "class_fidelity", "predict_labels"]


@dataclass(frozen=True)
class ClassFidelity:
    """Accuracy of a classifier on generated samples, overall and per requested class."""

    accuracy: float
    per_class: dict[int, float]
    counts: dict[int, int]

    @property
    def mean_per_class(self) -> float:
        """Balanced accuracy: the unweighted mean over the classes that were sampled."""
        return sum(self.per_class.values()) / len(self.per_class)

    def to_dict(self) -> dict:
        """JSON-safe form (per-class keys as strings)."""
        return {
            "accuracy": self.accuracy,
            "mean_per_class": self.mean_per_class,
            "per_class": {str(k): v for k, v in self.per_class.items()},
            "counts": {str(k): v for k, v in self.counts.items()},
        }


@torch.no_grad()
def predict_labels(
    classifier: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    *,
    batch_size: int = 256,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """Arg-max labels (N,) of a classifier mapping images (B, 3, H, W) in [0, 1] to logits (B, K)."""
    images = check_images(images)  # (N, 3, H, W)
    device = resolve_device(device)
    if isinstance(classifier, torch.nn.Module):
        classifier = classifier.to(device).eval()
    preds = []
    for start in range(0, images.shape[0], batch_size):
        logits = classifier(images[start : start + batch_size].to(device, torch.float32))  # (B, K)
        preds.append(logits.argmax(dim=1).cpu())
    return torch.cat(preds)  # (N,)


def class_fidelity(
    classifier: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    labels: torch.Tensor | Sequence[int],
    *,
    batch_size: int = 256,
    device: str | torch.device | None = None,
) -> ClassFidelity:
    """Accuracy of ``classifier`` on images (N, C, H, W) in [0, 1] generated for ``labels`` (N,)."""
    labels = torch.as_tensor(labels, dtype=torch.long).flatten().cpu()  # (N,)
    if labels.shape[0] != images.shape[0]:
        raise ValueError(f"{images.shape[0]} images but {labels.shape[0]} labels")
    preds = predict_labels(classifier, images, batch_size=batch_size, device=device)  # (N,)
    hits = preds == labels  # (N,)
    per_class, counts = {}, {}
    for label in sorted(set(labels.tolist())):
        mask = labels == label  # (N,)
        counts[label] = int(mask.sum())
        per_class[label] = float(hits[mask].float().mean())
    return ClassFidelity(accuracy=float(hits.float().mean()), per_class=per_class, counts=counts)
