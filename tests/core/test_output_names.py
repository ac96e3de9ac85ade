"""One name for a step's outputs, shared by the library's folders and the service's object keys."""

from __future__ import annotations

import pytest

from contract.outputs import step_name, step_of
from core.storage.keys import checkpoint_prefix, sample_key


def test_names_pad_to_seven_digits_and_parse_back():
    assert step_name(1200) == "step_0001200"
    assert [step_of(n) for n in ("step_0001200", "step_0001200.png", "step_12345678")] == [1200, 1200, 12345678]
    assert sorted(step_name(s) for s in (10, 9, 100)) == [step_name(9), step_name(10), step_name(100)]


@pytest.mark.parametrize("name", ["step_12", ".step_0000012.partial", "step_0000012.tmp", "samples", "step_x"])
def test_other_names_are_not_steps(name):
    assert step_of(name) is None


def test_storage_keys_use_the_same_names():
    assert checkpoint_prefix("job_1", 6) == "jobs/job_1/checkpoints/step_0000006/"
    assert sample_key("job_1", 6) == "jobs/job_1/samples/step_0000006.png"
