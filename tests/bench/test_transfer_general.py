"""``bench transfer``'s general form as a new user runs it: inferred resolution, benchmark defaults sized
to the budget, and every mistake a one-line error before anything heavy runs."""

from __future__ import annotations

import pytest
import yaml
from typer.testing import CliRunner

from bench.transfer_general import benchmark_defaults, general_setup
from cli.main import app

from .conftest import write_class_folder

runner = CliRunner()


@pytest.fixture
def folders(tmp_path):
    return (write_class_folder(tmp_path / "target", {"a": 2, "b": 2}, size=16, seed=1),
            write_class_folder(tmp_path / "heldout", {"a": 3, "b": 3}, size=16, seed=2))


def options(steps: int = 1500) -> dict:
    return dict(methods=["standard", "difftune"], seeds=1, steps=steps, eval_every=250, per_class=4,
                guidances=(1.0,))


def test_the_resolution_comes_from_the_base_and_the_rest_from_benchmark_defaults(tiny_base, folders, tmp_path):
    target, heldout = folders
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"batch_size": 8, "learning_rate": 1e-3}))  # no resolution
    setup = general_setup(tmp_path / "o", source=None, target=target, heldout=heldout, base=tiny_base,
                          config=config, base_steps=10, options=options())
    train = setup.train
    assert train["resolution"] == 16 and train["batch_size"] == 8 and train["learning_rate"] == 1e-3
    assert train["ema_decay"] == 0.999 and train["ema_warmup"] and train["bank"]["size"] == 512
    assert setup.config("difftune", 0).ema_decay == 0.999  # what the runs get
    bare = general_setup(tmp_path / "o", source=None, target=target, heldout=heldout, base=tiny_base, config=None,
                         base_steps=10, options=options(steps=300))
    assert bare.train["ema_decay"] == benchmark_defaults(300)["ema_decay"] == 0.995  # averages 200 of 300 steps


def test_mistakes_are_one_line_errors_before_anything_trains(tiny_base, folders, tmp_path):
    target, heldout = folders
    out = tmp_path / "bench"
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"resolution": 256}))
    base_args = ["bench", "transfer", "--target", str(target), "--heldout", str(heldout), "--out", str(out),
                 "--steps", "2"]
    cases = [
        (["--base", str(tiny_base), "--config", str(config)], "resolution: the base model generates 16px images, not 256px"),
        (["--base", str(tmp_path)], "is not a diffusers pipeline folder"),
        (["--base", str(tiny_base), "--heldout", str(write_class_folder(tmp_path / "h2", {"a": 2, "c": 2}, size=16))],
         "heldout: its classes ['a', 'c'] differ from the target's ['a', 'b']"),
    ]
    for extra, message in cases:
        result = runner.invoke(app, [*base_args, *extra])
        assert result.exit_code == 2 and message in " ".join(result.output.split()), result.output
        assert "Traceback" not in result.output and not (out / "domain_classifier").exists()


def test_an_ema_longer_than_the_runs_is_warned_about_first(tiny_base, folders, tmp_path):
    target, heldout = folders
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"ema_decay": 0.9999, "ema_warmup": False}))
    said = []
    general_setup(tmp_path / "o", source=None, target=target, heldout=heldout, base=tiny_base, config=config,
                  base_steps=10, options=options(), say=said.append)
    assert any("averages over ~10000 steps, more than the 1500" in line for line in said)
