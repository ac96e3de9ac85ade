"""Inception-v3 pool3 features for FID, compatible with the standard pytorch-fid weights.

The network is the TensorFlow FID Inception (``pt_inception-2015-12-05-6726825d.pth`` from pytorch-fid):
torchvision's Inception-v3 layout with 1008 output classes, no aux head, and the FID patches (average
pools that ignore padding in the A/C/E blocks, a max pool in the last E block). It is written here in
pure torch, with module names that give exactly the checkpoint's state-dict keys, so the checkpoint
loads with ``strict=True``. Features are the 2048-d global average pool ("pool3"); inputs in [0, 1]
are resized to 299x299 (bilinear, ``align_corners=False``) and mapped to [-1, 1], as pytorch-fid does.

Weights: an explicit path, else ``$DIFFTUNE_FID_WEIGHTS``, else torch.hub's cache, else a download
from pytorch-fid's GitHub release (hash-checked) when online.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from models.evaluation.extractor import ModuleFeatureExtractor

__all__ = [
    "FID_WEIGHTS_ENV",
    "FID_WEIGHTS_URL",
    "FIDInceptionV3",
    "InceptionWeightsError",
    "inception_feature_extractor",
    "load_fid_inception",
    "load_fid_inception_state_dict",
]

FID_WEIGHTS_URL = (
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
    "pt_inception-2015-12-05-6726825d.pth"
)
FID_WEIGHTS_ENV = "DIFFTUNE_FID_WEIGHTS"
FID_FEATURE_DIM = 2048
FID_NUM_CLASSES = 1008


class InceptionWeightsError(FileNotFoundError):
    """The FID Inception weights could not be found locally nor downloaded."""


#################################################################################
#                                Building blocks                                #
#################################################################################


class BasicConv2d(nn.Module):
    """Conv (no bias) -> BatchNorm (eps 1e-3) -> ReLU; keys ``conv.weight`` and ``bn.*``."""

    def __init__(self, in_channels: int, out_channels: int, **kwargs) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg_pool_no_pad(x: torch.Tensor) -> torch.Tensor:
    """3x3 stride-1 average pool that, like TensorFlow's, ignores the zero padding."""
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class FIDInceptionA(nn.Module):
    """Inception A block (35x35) with the FID average pool."""

    def __init__(self, in_channels: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(in_channels, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(in_channels, pool_features, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)  # (N, 64, H, W)
        b5 = self.branch5x5_2(self.branch5x5_1(x))  # (N, 64, H, W)
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))  # (N, 96, H, W)
        bp = self.branch_pool(_avg_pool_no_pad(x))  # (N, pool_features, H, W)
        return torch.cat([b1, b5, b3, bp], dim=1)


class InceptionB(nn.Module):
    """Grid reduction 35x35 -> 17x17 (unchanged by FID)."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(in_channels, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3(x)  # (N, 384, H', W')
        b3d = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))  # (N, 96, H', W')
        bp = F.max_pool2d(x, kernel_size=3, stride=2)  # (N, C, H', W')
        return torch.cat([b3, b3d, bp], dim=1)


class FIDInceptionC(nn.Module):
    """Inception C block (17x17, factorised 7x7 convolutions) with the FID average pool."""

    def __init__(self, in_channels: int, channels_7x7: int) -> None:
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)  # (N, 192, H, W)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))  # (N, 192, H, W)
        b7d = self.branch7x7dbl_1(x)  # (N, c7, H, W)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            b7d = layer(b7d)  # (N, c7 or 192, H, W)
        bp = self.branch_pool(_avg_pool_no_pad(x))  # (N, 192, H, W)
        return torch.cat([b1, b7, b7d, bp], dim=1)


class InceptionD(nn.Module):
    """Grid reduction 17x17 -> 8x8 (unchanged by FID)."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))  # (N, 320, H', W')
        b7 = self.branch7x7x3_1(x)  # (N, 192, H, W)
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(b7)))  # (N, 192, H', W')
        bp = F.max_pool2d(x, kernel_size=3, stride=2)  # (N, C, H', W')
        return torch.cat([b3, b7, bp], dim=1)


class FIDInceptionE(nn.Module):
    """Inception E block (8x8); the FID network pools with a no-pad average in Mixed_7b, max in Mixed_7c."""

    def __init__(self, in_channels: int, pool: str) -> None:
        super().__init__()
        if pool not in ("avg", "max"):
            raise ValueError(f"pool must be 'avg' or 'max'; got {pool!r}")
        self.pool = pool
        self.branch1x1 = BasicConv2d(in_channels, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(in_channels, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)  # (N, 320, H, W)
        b3 = self.branch3x3_1(x)  # (N, 384, H, W)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], dim=1)  # (N, 768, H, W)
        b3d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))  # (N, 384, H, W)
        b3d = torch.cat([self.branch3x3dbl_3a(b3d), self.branch3x3dbl_3b(b3d)], dim=1)  # (N, 768, H, W)
        if self.pool == "avg":
            pooled = _avg_pool_no_pad(x)  # (N, C, H, W)
        else:
            pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1)  # (N, C, H, W)
        bp = self.branch_pool(pooled)  # (N, 192, H, W)
        return torch.cat([b1, b3, b3d, bp], dim=1)  # (N, 2048, H, W)


#################################################################################
#                               FID Inception-v3                                #
#################################################################################


class FIDInceptionV3(nn.Module):
    """TF FID Inception-v3 returning 2048-d pool3 features for images (N, 3, H, W) in [0, 1].

    Module names match the pytorch-fid checkpoint. ``include_fc`` keeps the unused 1008-way ``fc``
    layer so the raw checkpoint loads with ``strict=True``; :meth:`logits` uses it.
    """

    def __init__(self, *, resize_input: bool = True, normalize_input: bool = True, include_fc: bool = True):
        super().__init__()
        self.resize_input = resize_input
        self.normalize_input = normalize_input
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.Mixed_5b = FIDInceptionA(192, pool_features=32)
        self.Mixed_5c = FIDInceptionA(256, pool_features=64)
        self.Mixed_5d = FIDInceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = FIDInceptionC(768, channels_7x7=128)
        self.Mixed_6c = FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6d = FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6e = FIDInceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = FIDInceptionE(1280, pool="avg")
        self.Mixed_7c = FIDInceptionE(2048, pool="max")
        self.fc = nn.Linear(FID_FEATURE_DIM, FID_NUM_CLASSES) if include_fc else None

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Resize to 299x299 (bilinear) and scale [0, 1] -> [-1, 1], exactly as pytorch-fid."""
        x = images
        if self.resize_input:
            x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)  # (N, 3, 299, 299)
        if self.normalize_input:
            x = 2 * x - 1
        return x

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.preprocess(images)  # (N, 3, 299, 299)
        x = self.Conv2d_1a_3x3(x)  # (N, 32, 149, 149)
        x = self.Conv2d_2a_3x3(x)  # (N, 32, 147, 147)
        x = self.Conv2d_2b_3x3(x)  # (N, 64, 147, 147)
        x = F.max_pool2d(x, kernel_size=3, stride=2)  # (N, 64, 73, 73)
        x = self.Conv2d_3b_1x1(x)  # (N, 80, 73, 73)
        x = self.Conv2d_4a_3x3(x)  # (N, 192, 71, 71)
        x = F.max_pool2d(x, kernel_size=3, stride=2)  # (N, 192, 35, 35)
        x = self.Mixed_5d(self.Mixed_5c(self.Mixed_5b(x)))  # (N, 288, 35, 35)
        x = self.Mixed_6a(x)  # (N, 768, 17, 17)
        x = self.Mixed_6e(self.Mixed_6d(self.Mixed_6c(self.Mixed_6b(x))))  # (N, 768, 17, 17)
        x = self.Mixed_7a(x)  # (N, 1280, 8, 8)
        x = self.Mixed_7c(self.Mixed_7b(x))  # (N, 2048, 8, 8)
        return F.adaptive_avg_pool2d(x, (1, 1)).flatten(1)  # (N, 2048)

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """1008-way logits of the original TF network (needs ``include_fc=True``)."""
        if self.fc is None:
            raise RuntimeError("this FIDInceptionV3 was built with include_fc=False")
        return self.fc(self.forward(images))  # (N, 1008)


#################################################################################
#                                    Loading                                    #
#################################################################################


def _download_state_dict(url: str, *, progress: bool) -> dict[str, torch.Tensor]:
    """Fetch (or reuse from torch.hub's cache) the checkpoint; the file name's hash prefix is checked."""
    try:
        return torch.hub.load_state_dict_from_url(
            url, map_location="cpu", progress=progress, check_hash=True, weights_only=True
        )
    except OSError as err:  # URLError, socket errors, no write access to the cache
        raise InceptionWeightsError(
            f"could not download the FID Inception weights from {url} ({err}). Offline, download "
            f"that file elsewhere and pass its path or set ${FID_WEIGHTS_ENV} to it."
        ) from err


def _resolve_weights_path(weights: str | os.PathLike | None) -> Path | None:
    """Explicit argument first, then ``$DIFFTUNE_FID_WEIGHTS``; None when neither is set."""
    source = weights if weights is not None else os.environ.get(FID_WEIGHTS_ENV) or None
    if source is None:
        return None
    path = Path(source).expanduser()
    if not path.is_file():
        origin = "argument" if weights is not None else f"${FID_WEIGHTS_ENV}"
        raise InceptionWeightsError(f"FID Inception weights file not found: {path} (from {origin})")
    return path


def load_fid_inception_state_dict(
    weights: str | os.PathLike | None = None, *, allow_download: bool = True, progress: bool = False
) -> dict[str, torch.Tensor]:
    """The pytorch-fid state dict from a path, ``$DIFFTUNE_FID_WEIGHTS``, or (if allowed) the release URL."""
    path = _resolve_weights_path(weights)
    if path is not None:
        return torch.load(path, map_location="cpu", weights_only=True)
    if not allow_download:
        raise InceptionWeightsError(
            f"no FID Inception weights given: pass a path or set ${FID_WEIGHTS_ENV} to a local copy of "
            f"{FID_WEIGHTS_URL}"
        )
    return _download_state_dict(FID_WEIGHTS_URL, progress=progress)


def load_fid_inception(
    weights: str | os.PathLike | None = None,
    *,
    allow_download: bool = True,
    resize_input: bool = True,
    progress: bool = False,
) -> FIDInceptionV3:
    """Build :class:`FIDInceptionV3` and load the pytorch-fid weights strictly (eval mode, no grads).

    A state dict without the ``fc`` layer (features only) is accepted; every other key must match.
    """
    state = load_fid_inception_state_dict(weights, allow_download=allow_download, progress=progress)
    model = FIDInceptionV3(resize_input=resize_input, include_fc="fc.weight" in state)
    model.load_state_dict(state, strict=True)
    model.requires_grad_(False)
    return model.eval()


def inception_feature_extractor(
    weights: str | os.PathLike | None = None,
    *,
    batch_size: int = 50,
    device: str | torch.device | None = None,
    allow_download: bool = True,
) -> ModuleFeatureExtractor:
    """A FeatureExtractor giving standard FID features (N, 2048) for images in [0, 1]."""
    model = load_fid_inception(weights, allow_download=allow_download)
    return ModuleFeatureExtractor(model, FID_FEATURE_DIM, batch_size=batch_size, device=device)
