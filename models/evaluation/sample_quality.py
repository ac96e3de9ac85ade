"""Sample-quality evaluation shared by the transfer benchmark and the chain-of-forgetting probe.

Real images come from a class-folder dataset; features come from the domain classifier of
:mod:`models.evaluation.domain_features`, trained once on those real target images (not Inception).
A model is scored by sampling a fixed number of images per class at each guidance scale and
computing FD, KID and class fidelity against the real set. A class-conditional family (DiT) samples
each class by its label; a text-to-image family samples it with the class's prompt, the evaluator's
``prompt_template`` formatted with the class folder's name (:func:`class_prompt`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from contract.families import family as family_spec
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
from models.families.base import Family
from models.families.dit import DiTFamily


def load_folder_images(root: str | Path, resolution: int) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Images (N, 3, R, R) in [0, 1], labels (N,) and class names of a class-folder dataset."""
    folder = scan_image_folder(root, resolution=resolution, upscale_small_images=True)
    images = torch.stack([load_image(p, resolution) for p in folder.files])  # (N, 3, R, R) in [-1, 1]
    return (images + 1) / 2, torch.tensor(folder.labels), folder.class_names


def class_prompt(template: str, name: str) -> str:
    """The prompt of class folder ``name``: ``template`` with ``{name}`` replaced by the name, underscores
    read as spaces (``a handwritten {name}`` + ``digit_5`` -> ``a handwritten digit 5``)."""
    return template.format(name=name.replace("_", " "))


def model_labels(family: DiTFamily, labels: torch.Tensor) -> torch.Tensor:
    """Labels a model can take: a base model without row k gets the null label for class k."""
    return torch.where(labels < family.null_label, labels, torch.full_like(labels, family.null_label))


GUIDANCE_MODES = ("cfg", "domain", "both")
DOMAIN_SUFFIX = "/dg"  # the key of a Domain Guidance score beside CFG's in "both" mode: "4/dg"


def guidance_order(key: str) -> tuple[float, bool]:
    """Sort key of a score key: by guidance scale, CFG before Domain Guidance ("1" < "4" < "4/dg")."""
    return float(key.removesuffix(DOMAIN_SUFFIX)), key.endswith(DOMAIN_SUFFIX)


@dataclass
class Evaluation:
    """One model's scores per setting key, with the samples and their features (for paired resampling)."""

    metrics: dict[str, dict[str, float]]
    images: dict[str, torch.Tensor]
    features: dict[str, torch.Tensor]


@dataclass
class Evaluator:
    """Scores a DiT (class labels) or a text-to-image model (class prompts) against real target images at
    several guidance scales."""

    classifier: DomainClassifier
    real_features: torch.Tensor  # (N, D)
    num_classes: int
    per_class: int = 40
    guidances: tuple[float, ...] = (1.0, 4.0)
    sample_steps: int = 25
    kid_subset_size: int = 100
    device: str = "cpu"  # where the classifier scores images (the sampled model keeps its own device)
    class_names: list[str] = field(default_factory=list)  # the real set's class folders, in label order
    prompt_template: str | None = None  # text families: the prompt of a class (see class_prompt)
    guidance_mode: str = "cfg"  # "domain": Domain Guidance from ``base`` (models/domain_guidance.py); "both"
    base: Family | None = None  # the pre-trained model (Domain Guidance's unconditional branch)

    def settings(self) -> list[tuple[str, float, str]]:
        """``(key, guidance, mode)`` of every score: one per guidance scale in cfg or domain mode; in "both",
        CFG under the plain key and Domain Guidance under ``"<g>/dg"`` for every scale but 1 (where the
        two are the same sampler: w = 1 keeps the conditional branch only)."""
        if self.guidance_mode not in GUIDANCE_MODES:
            raise ValueError(f"guidance_mode: {self.guidance_mode!r} is not one of {', '.join(GUIDANCE_MODES)}")
        out = []
        for g in self.guidances:
            if self.guidance_mode != "both":
                out.append((f"{g:g}", g, self.guidance_mode))
                continue
            out.append((f"{g:g}", g, "cfg"))
            if g != 1:
                out.append((f"{g:g}{DOMAIN_SUFFIX}", g, "domain"))
        return out

    @property
    def labels(self) -> torch.Tensor:
        return torch.arange(self.num_classes).repeat_interleave(self.per_class)  # (K * n,)

    @property
    def prompts(self) -> list[str]:
        """The prompt of every sample (in ``labels`` order) for text-to-image families."""
        if self.prompt_template is None or len(self.class_names) != self.num_classes:
            raise ValueError("prompt_template: a text-to-image model is evaluated with class prompts; give a "
                             "template such as 'a photo of a {name}' (and the class names)")
        return [class_prompt(self.prompt_template, self.class_names[k]) for k in self.labels.tolist()]

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return domain_feature_extractor(self.classifier, device=self.device)(images)  # (N, D)

    def score(self, images: torch.Tensor, labels: torch.Tensor, features: torch.Tensor | None = None,
              ) -> dict[str, float]:
        """FD, KID and class fidelity of generated images (N, 3, H, W) in [0, 1] for ``labels``."""
        features = self.features(images) if features is None else features
        metrics = compute_metrics_from_features(self.real_features, features, kid_subsets=50,
                                                kid_subset_size=self.kid_subset_size)
        metrics["class_fidelity"] = class_fidelity(self.classifier, images, labels, device=self.device).accuracy
        return metrics

    def sample(self, family: Family, guidance: float, seed: int, mode: str | None = None) -> torch.Tensor:
        """Images (K * n, 3, H, W) in [0, 1] for every class, from a fixed seed (Domain Guidance from
        ``base`` when ``mode`` (default: ``guidance_mode``) is domain and ``family`` is not the base itself)."""
        base = self.base if (mode or self.guidance_mode) == "domain" and self.base is not family else None
        if family_spec(family.name).text_conditioned:
            base_net = base and (family.pretrained_denoiser() or base.denoiser.eval())
            return family.generate_images(family.denoiser, self.prompts, guidance=guidance, steps=self.sample_steps,
                                          generator=torch.Generator().manual_seed(seed), base=base_net)
        latents = family.sample_latents(family.denoiser.eval(), model_labels(family, self.labels),
                                        null=family.null_label, guidance=guidance, steps=self.sample_steps,
                                        sampler="ddim", generator=torch.Generator().manual_seed(seed),
                                        base=base and base.denoiser.eval(), base_null=base and base.null_label)
        return family.decode_latents(latents)

    def run(self, family: Family, seed: int) -> Evaluation:
        """Metrics, images and per-sample features of one model at every setting (:meth:`settings`)."""
        result, done = Evaluation({}, {}, {}), {}
        for key, g, mode in self.settings():
            if mode == "domain" and (self.base is None or self.base is family):
                mode = "cfg"  # the base itself (or no base): Domain Guidance is its CFG, sampled once
            if (g, mode) not in done:
                images = self.sample(family, g, seed, mode)
                features = self.features(images)
                done[g, mode] = images, features, self.score(images, self.labels, features)
            result.images[key], result.features[key], result.metrics[key] = done[g, mode]
        return result

    def evaluate(self, family: Family, seed: int) -> tuple[dict[str, dict[str, float]], dict[str, torch.Tensor]]:
        """``({guidance: metrics}, {guidance: images})`` for one model."""
        result = self.run(family, seed)
        return result.metrics, result.images


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
    evaluator = Evaluator(classifier=classifier, real_features=torch.zeros(0), num_classes=len(names),
                          class_names=names, **options)
    evaluator.real_features = evaluator.features(images)
    return evaluator, meta
