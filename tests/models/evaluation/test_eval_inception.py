"""FID Inception-v3 plumbing on random weights (the real pytorch-fid weights cannot be fetched here).

What is checked: the state-dict layout of pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth``
(key names, shapes, parameter count), strict loading from a file / env var, feature shape and batching,
and the errors when the weights are missing offline. Numerical parity with pytorch-fid's features
needs the real weights and is not tested.
"""

import urllib.error

import pytest
import torch
from torch import nn

from models.evaluation import inception as inception_module
from models.evaluation.extractor import FeatureExtractor
from models.evaluation.inception import (
    FID_WEIGHTS_ENV,
    FID_WEIGHTS_URL,
    FIDInceptionV3,
    InceptionWeightsError,
    inception_feature_extractor,
    load_fid_inception,
    load_fid_inception_state_dict,
)

# Shapes fixed by torchvision's Inception3(num_classes=1008, aux_logits=False) + pytorch-fid's patches.
EXPECTED_SHAPES = {
    "Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3),
    "Conv2d_1a_3x3.bn.running_var": (32,),
    "Conv2d_4a_3x3.conv.weight": (192, 80, 3, 3),
    "Mixed_5b.branch_pool.conv.weight": (32, 192, 1, 1),
    "Mixed_5d.branch5x5_2.conv.weight": (64, 48, 5, 5),
    "Mixed_6a.branch3x3.conv.weight": (384, 288, 3, 3),
    "Mixed_6b.branch7x7_2.conv.weight": (128, 128, 1, 7),
    "Mixed_6e.branch7x7dbl_5.conv.weight": (192, 192, 1, 7),
    "Mixed_7a.branch7x7x3_4.conv.weight": (192, 192, 3, 3),
    "Mixed_7b.branch3x3dbl_1.conv.weight": (448, 1280, 1, 1),
    "Mixed_7c.branch3x3_2b.conv.weight": (384, 384, 3, 1),
    "Mixed_7c.branch_pool.conv.weight": (192, 2048, 1, 1),
    "fc.weight": (1008, 2048),
    "fc.bias": (1008,),
}
# torchvision documents 27,161,264 parameters for inception_v3 (1000 classes, aux head). Without the
# aux head (3,326,696) and with 1008 classes (+16,392) that is the FID network's count.
FID_INCEPTION_PARAMS = 27_161_264 - 3_326_696 + 16_392


def _random_fid_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict in the checkpoint's layout with weights that keep activations alive."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = FIDInceptionV3()
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    return model.state_dict()


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """A few 299x299 forwards: one intra-op thread keeps them predictable on a busy 2-core machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> tuple[str, dict[str, torch.Tensor]]:
    state = _random_fid_state()
    path = tmp_path_factory.mktemp("fid") / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(state, path)
    return str(path), state


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    """No env var leaking in, torch.hub's cache in a temp dir, and any real download attempt fails."""
    monkeypatch.delenv(FID_WEIGHTS_ENV, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)


def test_state_dict_keys_follow_the_pytorch_fid_layout():
    state = FIDInceptionV3().state_dict()
    for key, shape in EXPECTED_SHAPES.items():
        assert tuple(state[key].shape) == shape, key
    assert not any(k.startswith("AuxLogits") for k in state)
    prefixes = {k.split(".")[0] for k in state}
    assert prefixes == {
        "Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
        "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e",
        "Mixed_7a", "Mixed_7b", "Mixed_7c", "fc",
    }  # fmt: skip
    assert sum(p.numel() for p in FIDInceptionV3().parameters()) == FID_INCEPTION_PARAMS
    assert "fc.weight" not in FIDInceptionV3(include_fc=False).state_dict()


def test_fid_patches_are_in_place():
    model = FIDInceptionV3()
    assert model.Mixed_7b.pool == "avg" and model.Mixed_7c.pool == "max"
    # The TF average pool ignores padding: a constant map stays constant at the borders.
    x = torch.ones(1, 1, 5, 5)
    assert torch.equal(inception_module._avg_pool_no_pad(x), x)


def test_preprocess_resizes_to_299_and_maps_to_minus_one_one():
    model = FIDInceptionV3()
    x = torch.stack([torch.zeros(3, 32, 32), torch.full((3, 32, 32), 0.5), torch.ones(3, 32, 32)])
    out = model.preprocess(x)
    assert out.shape == (3, 3, 299, 299)
    for image, value in zip(out, (-1.0, 0.0, 1.0), strict=True):
        assert (image - value).abs().max() < 1e-6


def test_strict_round_trip_from_file_gives_identical_features(checkpoint):
    path, state = checkpoint
    model = load_fid_inception(path)
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
    reference = FIDInceptionV3()
    reference.load_state_dict(state, strict=True)
    x = torch.rand(2, 3, 40, 40, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model(x), reference.eval()(x))


def test_strict_loading_rejects_a_foreign_layout(checkpoint):
    _, state = checkpoint
    broken = dict(state)
    broken["Mixed_7c.branch_pool.conv.weight"] = torch.zeros(192, 1280, 1, 1)
    with pytest.raises(RuntimeError, match="size mismatch"):
        FIDInceptionV3().load_state_dict(broken, strict=True)
    renamed = {k.replace("Mixed_5b", "mixed_5b"): v for k, v in state.items()}
    with pytest.raises(RuntimeError, match="Missing key"):
        FIDInceptionV3().load_state_dict(renamed, strict=True)


def test_old_style_checkpoints_without_fc_or_batch_counters_load(tmp_path, checkpoint):
    _, state = checkpoint
    stripped = {k: v for k, v in state.items() if "num_batches_tracked" not in k and not k.startswith("fc.")}
    path = tmp_path / "features_only.pth"
    torch.save(stripped, path)
    model = load_fid_inception(path)
    assert model.fc is None
    assert torch.equal(model.Mixed_7c.branch_pool.conv.weight, state["Mixed_7c.branch_pool.conv.weight"])


def test_feature_extractor_shape_batching_and_protocol(checkpoint, monkeypatch):
    path, _ = checkpoint
    monkeypatch.setenv(FID_WEIGHTS_ENV, path)
    extractor = inception_feature_extractor(batch_size=2, device="cpu")
    assert isinstance(extractor, FeatureExtractor) and extractor.feature_dim == 2048
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    feats = extractor(images)
    assert feats.shape == (3, 2048) and feats.dtype == torch.float32
    assert (feats >= 0).all()  # average of ReLU outputs
    assert feats.std(dim=0).mean() > 0  # different images, different features
    with torch.no_grad():
        whole = extractor.module(images)  # one batch of 3 vs batches of 2 + 1
    assert torch.allclose(feats, whole, atol=1e-5)


def test_missing_weights_file_is_a_clear_error(tmp_path, monkeypatch):
    missing = tmp_path / "nope.pth"
    with pytest.raises(InceptionWeightsError, match="not found: .*nope.pth"):
        load_fid_inception(missing)
    monkeypatch.setenv(FID_WEIGHTS_ENV, str(missing))
    with pytest.raises(InceptionWeightsError, match=f"\\${FID_WEIGHTS_ENV}"):
        load_fid_inception()


def test_no_weights_and_no_download_names_the_env_var_and_url():
    with pytest.raises(InceptionWeightsError) as info:
        load_fid_inception_state_dict(allow_download=False)
    assert FID_WEIGHTS_ENV in str(info.value) and FID_WEIGHTS_URL in str(info.value)
    assert isinstance(info.value, FileNotFoundError)


def test_offline_download_failure_is_wrapped_with_instructions():
    with pytest.raises(InceptionWeightsError, match="could not download") as info:
        load_fid_inception()
    assert FID_WEIGHTS_URL in str(info.value) and FID_WEIGHTS_ENV in str(info.value)


def test_download_path_requests_the_pytorch_fid_release_with_hash_check(monkeypatch, checkpoint):
    _, state = checkpoint
    calls = []

    def fake_download(url, **kwargs):
        calls.append((url, kwargs))
        return state

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", fake_download)
    model = load_fid_inception()
    assert calls[0][0] == FID_WEIGHTS_URL
    assert calls[0][0].endswith("pt_inception-2015-12-05-6726825d.pth")
    assert calls[0][1]["check_hash"] is True and calls[0][1]["map_location"] == "cpu"
    assert torch.equal(model.Conv2d_1a_3x3.conv.weight, state["Conv2d_1a_3x3.conv.weight"])


def test_torchmetrics_fid_with_the_local_inception_equals_ours(checkpoint):
    """Inception FID through torchmetrics (the maintained implementation), loaded from a local weights file,
    equals our FD of the same Inception's pool3 features."""
    from models.evaluation.frechet import frechet_distance
    from models.evaluation.library import library_fid

    path, _ = checkpoint
    g = torch.Generator().manual_seed(3)
    real, fake = torch.rand(6, 3, 16, 16, generator=g), torch.rand(6, 3, 16, 16, generator=g) ** 2
    extract = inception_feature_extractor(path, allow_download=False)
    ours = frechet_distance(extract(real), extract(fake))
    assert library_fid(real, fake, weights=path, batch_size=4) == pytest.approx(ours, rel=1e-4)
    assert ours > 0
