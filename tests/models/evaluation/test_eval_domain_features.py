"""The domain classifier: it learns, it is deterministic, it round-trips, and its features separate sets."""

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from sklearn.datasets import load_digits

from models.evaluation.domain_features import (
    DomainClassifier,
    DomainClassifierConfig,
    domain_feature_extractor,
    load_domain_classifier,
    save_domain_classifier,
    train_domain_classifier,
)
from models.evaluation.extractor import FeatureExtractor
from models.evaluation.frechet import frechet_distance


def _quadrant_images(n: int, seed: int, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Four classes: a bright square in one quadrant over uniform noise. Trivially separable."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 4
    images = 0.3 * torch.rand(n, 3, size, size, generator=g)
    half = size // 2
    for i, label in enumerate(labels.tolist()):
        row, col = divmod(label, 2)
        images[i, :, row * half + 2 : row * half + half - 2, col * half + 2 : col * half + half - 2] += 0.6
    return images, labels


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """These nets are tiny: one intra-op thread is as fast here and immune to a busy machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's bundled 8x8 digits (offline), upscaled to 16x16 RGB in [0, 1]."""
    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32)[:, None] / 16.0  # (1797, 1, 8, 8)
    x = F.interpolate(x, size=(16, 16), mode="bilinear").clamp(0, 1).expand(-1, 3, -1, -1)
    return x.contiguous(), torch.tensor(data.target)


@pytest.fixture(scope="module")
def digits_model(digits):
    x, y = digits
    return train_domain_classifier(
        x[:1000], y[:1000], val_images=x[1400:], val_labels=y[1400:], image_size=16, epochs=4, batch_size=32
    )


def test_classifier_shapes():
    model = DomainClassifier(DomainClassifierConfig(num_classes=5, image_size=16, width=8, feature_dim=24))
    x = torch.rand(3, 3, 28, 28)  # resized to 16 internally
    assert model.features(x).shape == (3, 24)
    assert model(x).shape == (3, 5)


def test_config_validation():
    with pytest.raises(ValueError, match="num_classes"):
        DomainClassifierConfig(num_classes=1)
    with pytest.raises(ValueError, match="too small"):
        DomainClassifierConfig(num_classes=3, image_size=4, num_stages=3)
    with pytest.raises(ValueError, match="class_names"):
        DomainClassifierConfig(num_classes=3, class_names=["a"])


def test_learns_a_separable_task_and_generalises():
    x, y = _quadrant_images(128, seed=0)
    x_val, y_val = _quadrant_images(64, seed=1)
    result = train_domain_classifier(
        x,
        y,
        val_images=x_val,
        val_labels=y_val,
        image_size=16,
        width=8,
        feature_dim=16,
        epochs=6,
        batch_size=16,
    )
    assert result.epoch_loss[-1] < result.epoch_loss[0]
    assert result.epoch_accuracy[-1] >= 0.95
    assert result.val_accuracy >= 0.95
    assert result.model.config.num_classes == 4


def test_digits_classifier_reaches_high_held_out_accuracy(digits_model):
    assert digits_model.val_accuracy > 0.9
    assert digits_model.epoch_accuracy[-1] > 0.9


def test_training_is_deterministic_under_a_seed_and_leaves_the_global_rng_alone():
    x, y = _quadrant_images(64, seed=2)
    kwargs = dict(image_size=16, width=8, feature_dim=16, epochs=2, batch_size=16)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = train_domain_classifier(x, y, seed=7, **kwargs)
    assert torch.equal(torch.get_rng_state(), before)
    b = train_domain_classifier(x, y, seed=7, **kwargs)
    c = train_domain_classifier(x, y, seed=8, **kwargs)
    state_a, state_b, state_c = (r.model.state_dict() for r in (a, b, c))
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    assert a.epoch_loss == b.epoch_loss
    assert not torch.equal(state_a["head.weight"], state_c["head.weight"])


def test_training_rejects_bad_labels():
    x, _ = _quadrant_images(8, seed=0)
    with pytest.raises(ValueError, match="labels"):
        train_domain_classifier(x, [0, 1, 2], epochs=1)
    with pytest.raises(ValueError, match="out of range"):
        train_domain_classifier(x, [0, 1, 2, 3] * 2, num_classes=3, epochs=1)


def test_save_load_round_trip(tmp_path, digits, digits_model):
    x, _ = digits
    meta = digits_model.metadata() | {"dataset": "sklearn-digits"}
    save_domain_classifier(digits_model.model, tmp_path / "domain", metadata=meta)
    assert sorted(p.name for p in (tmp_path / "domain").iterdir()) == ["config.json", "model.safetensors"]
    document = json.loads((tmp_path / "domain" / "config.json").read_text())
    assert document["config"]["num_classes"] == 10 and document["config"]["image_size"] == 16
    assert document["metadata"]["val_accuracy"] == pytest.approx(digits_model.val_accuracy)
    assert set(load_file(tmp_path / "domain" / "model.safetensors")) == set(digits_model.model.state_dict())

    loaded, metadata = load_domain_classifier(tmp_path / "domain")
    assert metadata["dataset"] == "sklearn-digits" and metadata["seed"] == 0
    assert not loaded.training
    with torch.no_grad():
        assert torch.equal(loaded.features(x[:8]), digits_model.model.eval().features(x[:8]))


def test_load_reports_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_domain_classifier(tmp_path)


def test_domain_features_separate_real_from_corrupted_sets(digits, digits_model):
    x, _ = digits
    extractor = domain_feature_extractor(digits_model.model, batch_size=100, device="cpu")
    assert isinstance(extractor, FeatureExtractor) and extractor.feature_dim == 128
    real_a, real_b = extractor(x[1400:1600]), extractor(x[1600:])
    g = torch.Generator().manual_seed(0)
    noisy = (x[1600:] + 0.5 * torch.rand(x[1600:].shape, generator=g)).clamp(0, 1)
    blurred = F.interpolate(F.avg_pool2d(x[1600:], 4), size=(16, 16), mode="nearest")
    assert real_a.shape == (200, 128)
    fd_real = frechet_distance(real_a, real_b)
    assert fd_real < 0.5 * frechet_distance(real_a, extractor(noisy))
    assert fd_real < 0.5 * frechet_distance(real_a, extractor(blurred))
