"""Evaluation of generated images: Fréchet distance, KID and class fidelity with pluggable features.

- :mod:`.frechet`: FD (from features or mean/cov statistics) and KID, in float64.
- :mod:`.extractor`: the :class:`FeatureExtractor` protocol and a module wrapper (batching, no-grad).
- :mod:`.inception`: the pytorch-fid Inception-v3 (standard FID features; weights from a file or URL).
- :mod:`.domain_features`: a small CNN trained on real target images, an offline extractor.
- :mod:`.fidelity`: classifier accuracy on samples generated per label.
- :mod:`.metrics`: :func:`compute_metrics` ties an extractor to FD and KID.
"""

from models.evaluation.domain_features import (
    DomainClassifier,
    DomainClassifierConfig,
    DomainTrainResult,
    domain_feature_extractor,
    load_domain_classifier,
    save_domain_classifier,
    train_domain_classifier,
)
from models.evaluation.extractor import FeatureExtractor, ModuleFeatureExtractor, check_images
from models.evaluation.fidelity import ClassFidelity, class_fidelity, predict_labels
from models.evaluation.frechet import (
    feature_statistics,
    frechet_distance,
    frechet_distance_from_stats,
    kernel_inception_distance,
)
from models.evaluation.inception import (
    FID_WEIGHTS_ENV,
    FID_WEIGHTS_URL,
    FIDInceptionV3,
    InceptionWeightsError,
    inception_feature_extractor,
    load_fid_inception,
)
from models.evaluation.metrics import compute_metrics, compute_metrics_from_features

__all__ = [
    "FID_WEIGHTS_ENV",
    "FID_WEIGHTS_URL",
    "ClassFidelity",
    "DomainClassifier",
    "DomainClassifierConfig",
    "DomainTrainResult",
    "FIDInceptionV3",
    "FeatureExtractor",
    "InceptionWeightsError",
    "ModuleFeatureExtractor",
    "check_images",
    "class_fidelity",
    "compute_metrics",
    "compute_metrics_from_features",
    "domain_feature_extractor",
    "feature_statistics",
    "frechet_distance",
    "frechet_distance_from_stats",
    "inception_feature_extractor",
    "kernel_inception_distance",
    "load_domain_classifier",
    "load_fid_inception",
    "predict_labels",
    "save_domain_classifier",
    "train_domain_classifier",
]
