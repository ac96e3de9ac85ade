"""EMA: the warm-up decay min(d, (1+n)/(10+n)) and the average it produces, in numbers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from models.ema import EMA, host_copy


def scalar_module(value: float) -> nn.Module:
    module = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        module.weight.fill_(value)
    return module


def test_warmup_decay_follows_the_formula_until_it_reaches_the_target():
    ema = EMA(scalar_module(0.0), decay=0.9, warmup=True)
    decays = []
    for _ in range(100):
        decays.append(ema.current_decay())
        ema.num_updates += 1
    assert decays[:3] == pytest.approx([1 / 10, 2 / 11, 3 / 12])
    # (1+n)/(10+n) first reaches 0.9 at n = 80; from there on the target decay holds
    assert decays[79] == pytest.approx(80 / 89) and decays[80:] == pytest.approx([0.9] * 20)


def test_without_warmup_the_decay_is_constant():
    ema = EMA(scalar_module(0.0), decay=0.9999)
    ema.num_updates = 5
    assert ema.current_decay() == 0.9999


def test_updates_average_with_the_current_decay():
    module = scalar_module(0.0)
    ema = EMA(module, decay=0.5, warmup=True)
    expected = 0.0
    for n, value in enumerate([10.0, 20.0, 30.0]):
        with torch.no_grad():
            module.weight.fill_(value)
        decay = min(0.5, (1 + n) / (10 + n))
        expected = decay * expected + (1 - decay) * value
        ema.update(module)
    assert ema.shadow[0].item() == pytest.approx(expected)  # 0.1·0 + 0.9·10 = 9, then 2/11, then 3/12
    assert expected == pytest.approx(((9.0 * 2 / 11) + 20 * 9 / 11) * 0.25 + 30 * 0.75)
    target = scalar_module(-1.0)
    ema.copy_to(target)
    assert target.weight.item() == pytest.approx(expected)


def test_sampling_swaps_the_average_in_and_the_trained_weights_back():
    module = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.BatchNorm1d(3))
    ema = EMA(module, decay=0.5)
    with torch.no_grad():
        module[0].weight.add_(1.0)
    ema.update(module)  # the average is now halfway
    trained = {k: v.clone() for k, v in module.state_dict().items()}
    with ema.swapped_in(module) as swapped:
        assert swapped is module and torch.allclose(module[0].weight, trained["0.weight"] - 0.5)
    assert all(torch.equal(v, trained[k]) for k, v in module.state_dict().items())
    copy = host_copy(module)  # on the CPU too: its own storage, never the trained tensors
    ema.copy_to(copy)
    assert torch.equal(module[0].weight, trained["0.weight"]) and not torch.equal(copy[0].weight, module[0].weight)
    assert copy[1].running_mean.data_ptr() != module[1].running_mean.data_ptr()
