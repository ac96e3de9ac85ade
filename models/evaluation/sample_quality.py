"""Sample-quality evaluation shared by the transfer benchmark and the chain-of-forgetting probe.

Real images come from a class-folder dataset; features come from the domain classifier of
:mod:`models.evaluation.domain_features`, trained once on those real target images (not Inception).
A model is scored by sampling a fixed number of images per class at each guidance scale and
computing FD, KID and class fidelity against the real set.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from models.data import load_image, scan_image_folder
from models.evaluation import (
    DomainClassifier,
    class_fidelity,
    compute_metrics_from_features,
    domain_feature_extractor,
    load_domain_classifier,
    save_domain_classifier,
    train_domain_classifier,
)
from models.families.dit import DiTFamily


def load_folder_images(root: str | Path, resolution: int) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Images (N, 3, R, R) in [0, 1], labels (N,) and class names of a class-folder dataset."""
    folder = scan_image_folder(root, resolution=resolution, upscale_small_images=True)
    images = torch.stack([load_image(p, resolution) for p in folder.files])  # (N, 3, R, R) in [-1, 1]
    return (images + 1) / 2, torch.tensor(folder.labels), folder.class_names


def model_labels(family: DiTFamily, labels: torch.Tensor) -> torch.Tensor:
    """Labels a model can take: a base model without row k gets the null label for class k."""
    return torch.where(labels < family.null_label, labels, torch.full_like(labels, family.null_label))


@dataclass
class Evaluator:
    """Scores a DiT against real target images at several guidance scales."""

    classifier: DomainClassifier
    real_features: torch.Tensor  # (N, D)
    num_classes: int
    per_class: int = 40
    guidances: tuple[float, ...] = (1.0, 4.0)
    sample_steps: int = 25
    kid_subset_size: int = 100
    device: str = "cpu"  # where the classifier scores images (the sampled model keeps its own device)

    @property
    def labels(self) -> torch.Tensor:
        return torch.arange(self.num_classes).repeat_interleave(self.per_class)  # (K * n,)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return domain_feature_extractor(self.classifier, device=self.device)(images)  # (N, D)

    def score(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        """FD, KID and class fidelity of generated images (N, 3, H, W) in [0, 1] for ``labels``."""
        metrics = compute_metrics_from_features(self.real_features, self.features(images), kid_subsets=50,
                                                kid_subset_size=self.kid_subset_size)
        metrics["class_fidelity"] = class_fidelity(self.classifier, images, labels, device=self.device).accuracy
        return metrics

    def sample(self, family: DiTFamily, guidance: float, seed: int) -> torch.Tensor:
        """Images (K * n, 3, H, W) in [0, 1] for every class, from a fixed seed."""
        latents = family.sample_latents(family.denoiser.eval(), model_labels(family, self.labels),
                                        null=family.null_label, guidance=guidance, steps=self.sample_steps,
                                        sampler="ddim", generator=torch.Generator().manual_seed(seed))
        return family.decode_latents(latents)

    def evaluate(self, family: DiTFamily, seed: int) -> tuple[dict[str, dict[str, float]], dict[str, torch.Tensor]]:
        """``({guidance: metrics}, {guidance: images})`` for one model."""
        metrics, images = {}, {}
        for g in self.guidances:
            key = f"{g:g}"
            images[key] = self.sample(family, g, seed)
            metrics[key] = self.score(images[key], self.labels)
        return metrics, images


def build_evaluator(real_dir: str | Path, resolution: int, *, classifier_dir: Path | None = None,
                    val_dir: str | Path | None = None, epochs: int = 15, **options: Any) -> tuple[Evaluator, dict]:
    """Train (or load from ``classifier_dir``) the domain classifier on ``real_dir``; return it as an Evaluator.

    The classifier is saved to ``classifier_dir`` when given, so a later probe reuses the same features.
    """
    images, labels, names = load_folder_images(real_dir, resolution)
    if classifier_dir is not None and (Path(classifier_dir) / "config.json").exists():
        classifier, meta = load_domain_classifier(classifier_dir)
    else:
        val = load_folder_images(val_dir, resolution) if val_dir else (None, None, None)
        trained = train_domain_classifier(images, labels, class_names=names, epochs=epochs,
                                          val_images=val[0], val_labels=val[1], seed=0)
        classifier, meta = trained.model, trained.metadata()
        if classifier_dir is not None:
            save_domain_classifier(classifier, classifier_dir, metadata=meta)
    meta = {**meta, "kind": "domain classifier trained on real target images (not Inception)",
            "real_images": len(images), "classes": names}
    evaluator = Evaluator(classifier=classifier, real_features=torch.zeros(0), num_classes=len(names), **options)
    evaluator.real_features = evaluator.features(images)
    return evaluator, meta
