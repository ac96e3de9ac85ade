"""Class fidelity with a hand-made classifier whose answers are known in advance."""

import pytest
import torch
from torch import nn

from models.evaluation.fidelity import class_fidelity, predict_labels


class BrightestChannel(nn.Module):
    """Predicts the channel (0, 1, 2) with the highest mean value: a classifier with known outputs."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images.mean(dim=(2, 3))  # (N, 3) logits


def _images_of(channels: list[int]) -> torch.Tensor:
    images = torch.zeros(len(channels), 3, 8, 8)
    for i, c in enumerate(channels):
        images[i, c] = 1.0
    return images


def test_predict_labels_batches_without_changing_answers():
    images = _images_of([0, 1, 2, 2, 1, 0, 1])
    expected = torch.tensor([0, 1, 2, 2, 1, 0, 1])
    assert torch.equal(predict_labels(BrightestChannel(), images, batch_size=3, device="cpu"), expected)


def test_class_fidelity_overall_and_per_class():
    # Asked for labels 0,0,0,0 / 1,1 / 2,2; got right: three of class 0, one of class 1, both of class 2.
    labels = [0, 0, 0, 0, 1, 1, 2, 2]
    generated = _images_of([0, 0, 0, 2, 1, 0, 2, 2])
    result = class_fidelity(BrightestChannel(), generated, labels, batch_size=4, device="cpu")
    assert result.accuracy == pytest.approx(6 / 8)
    assert result.per_class == pytest.approx({0: 0.75, 1: 0.5, 2: 1.0})
    assert result.counts == {0: 4, 1: 2, 2: 2}
    assert result.mean_per_class == pytest.approx((0.75 + 0.5 + 1.0) / 3)
    assert result.to_dict()["per_class"] == {"0": 0.75, "1": 0.5, "2": 1.0}


def test_class_fidelity_accepts_a_plain_callable_and_tensor_labels():
    generated = _images_of([1, 1, 1])
    result = class_fidelity(lambda x: x.mean(dim=(2, 3)), generated, torch.tensor([1, 1, 0]), device="cpu")
    assert result.accuracy == pytest.approx(2 / 3)
    assert result.per_class == {0: 0.0, 1: 1.0}


def test_class_fidelity_rejects_mismatched_labels_and_bad_ranges():
    with pytest.raises(ValueError, match="3 images but 2 labels"):
        class_fidelity(BrightestChannel(), _images_of([0, 1, 2]), [0, 1], device="cpu")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        class_fidelity(BrightestChannel(), 2 * _images_of([0, 1]) - 1, [0, 1], device="cpu")
