"""The ControlNet convergence benchmark: crossing steps, summary, and a tiny end-to-end run via the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from bench.controlnet import ControlNetSetup, first_crossing, summarize, write_captioned_digits
from cli.main import app


def test_first_crossing_is_the_first_step_at_or_above_the_threshold():
    history = [[0, 0.1], [10, 0.49], [20, 0.5], [30, 0.4], [40, 0.7]]
    assert first_crossing(history, 0.5) == 20
    assert first_crossing(history, 0.6) == 40
    assert first_crossing(history, 0.9) is None


def test_ablation_methods_separate_the_two_parts_of_difftune(tmp_path):
    setup = ControlNetSetup(base=tmp_path, target=tmp_path, heldout=tmp_path, out=tmp_path)
    assert setup.methods == ["standard", "difftune", "difftune_blank"]  # ablations only when asked
    power_only, bank_only = setup.config("power_only", 0), setup.config("bank_only", 0)
    assert not power_only.uses_bank and power_only.target_power == 1.0
    assert bank_only.uses_bank and bank_only.target_power == 0.0 and bank_only.effective_bank_power == 1.0
    assert bank_only.control_extractor == "canny"
    as_data = setup.config("bank_as_data", 0)  # the bank's pairs as plain data: no timestep shaping, own prompts
    assert as_data.uses_bank and as_data.target_power == as_data.effective_bank_power == 0.0
    assert as_data.bank_label == "prompt" and as_data.bank_loss_weight == 0.25
    low_t = setup.config("bank_as_data_low_t", 0)  # the same, with the bank's low-noise timesteps put back
    assert low_t.effective_bank_power == 1.0 and low_t.target_power == 0.0 and low_t.bank_label == "prompt"
    on_prompts = setup.config("bank_only_prompt", 0)  # bank_only but bank rows keep their prompts
    assert on_prompts.bank_label == "prompt" and bank_only.bank_label == "null"
    assert on_prompts.bank_loss_weight == bank_only.bank_loss_weight == 0.1
    with pytest.raises(ValueError, match="method: unknown 'magic'"):
        setup.config("magic", 0)


def test_summary_compares_mean_crossing_steps_with_standard(tmp_path):
    setup = ControlNetSetup(base=tmp_path, target=tmp_path, heldout=tmp_path, out=tmp_path,
                            methods=["standard", "difftune"], seeds=2, threshold=0.5)

    def run(method, seed, crossing_values):
        return {"method": method, "seed": seed, "history": [[0, 0.1], [100, crossing_values[0]], [200, crossing_values[1]]],
                "converged_at_step": first_crossing([[0, 0.1], [100, crossing_values[0]], [200, crossing_values[1]]], 0.5)}

    runs = [run("standard", 0, (0.2, 0.6)), run("standard", 1, (0.3, 0.55)),
            run("difftune", 0, (0.6, 0.7)), run("difftune", 1, (0.2, 0.65))]
    summary = summarize(runs, setup)
    assert summary["standard"]["converged_at_step"] == [200, 200]
    assert summary["difftune"]["mean_converged_at_step"] == 150
    assert summary["difftune"]["sooner_than_standard"] == pytest.approx(0.25)
    assert summary["standard"]["sooner_than_standard"] is None
    assert summary["difftune"]["f1"]["100"]["mean"] == pytest.approx(0.4)
    assert summary["standard"]["crossings"]["0.6"] == [200, None]


def test_runs_that_never_converge_make_the_speed_up_a_bound(tmp_path):
    setup = ControlNetSetup(base=tmp_path, target=tmp_path, heldout=tmp_path, out=tmp_path, steps=400,
                            methods=["standard", "difftune", "slow"], seeds=2, threshold=0.5)

    def run(method, crossing):
        history = [[0, 0.1], [400, 0.4]] if crossing is None else [[0, 0.1], [crossing, 0.6]]
        return {"method": method, "seed": 0, "history": history, "converged_at_step": crossing}

    runs = [run("standard", 200), run("standard", None), run("difftune", 100), run("difftune", 100),
            run("slow", None), run("slow", None)]
    summary = summarize(runs, setup)
    # standard's unconverged run counts at the 400-step budget: mean >= 300, so difftune is at least 67% sooner
    assert summary["difftune"]["sooner_than_standard"] == pytest.approx(1 - 100 / 300)
    assert summary["difftune"]["sooner_bound"] == "at_least"
    assert summary["slow"]["sooner_than_standard"] is None and summary["slow"]["mean_converged_at_step"] is None


def test_captioned_digits_have_canny_conditions(tmp_path):
    root = write_captioned_digits(tmp_path / "d", (5, 6), 2, resolution=16)
    rows = [json.loads(line) for line in (root / "metadata.jsonl").read_text().splitlines()]
    assert [r["text"] for r in rows] == ["digit 5", "digit 5", "digit 6", "digit 6"]
    edges = Image.open(root / rows[0]["conditioning_file_name"])
    assert edges.size == (16, 16) and set(np.unique(np.asarray(edges.convert("L")))) <= {0, 255}


def test_tiny_benchmark_writes_results_plot_and_report(tmp_path, one_thread):
    from models.tiny import build_tiny_sd_pipeline

    base = build_tiny_sd_pipeline(tmp_path / "sd", resolution=16)
    target = write_captioned_digits(tmp_path / "target", (5, 6), 2, resolution=16)
    heldout = write_captioned_digits(tmp_path / "heldout", (5, 6), 1, offset=2, resolution=16)
    config = tmp_path / "c.yaml"
    config.write_text(f"base_model: {base}\nresolution: 16\nbatch_size: 2\n"
                      "bank: {size: 4, batch_size: 4, num_inference_steps: 2}\nbank_prompts: ['digit 1']\n")
    out = tmp_path / "out"
    args = ["bench", "controlnet", "--out", str(out), "--base", str(base), "--target", str(target),
            "--heldout", str(heldout), "--config", str(config), "--method", "standard", "--method", "difftune_blank",
            "--seeds", "1", "--steps", "2", "--eval-every", "1", "--sample-steps", "2", "--threshold", "0.01"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    assert [r["method"] for r in results["runs"]] == ["standard", "difftune_blank"]
    for run in results["runs"]:
        assert [s for s, _ in run["history"]] == [0, 1, 2]
        assert all(0.0 <= f1 <= 1.0 for _, f1 in run["history"])
        assert run["converged_at_step"] == first_crossing(run["history"], 0.01)
    assert results["setup"]["heldout_pairs"] == 2
    Image.open(out / "f1_vs_step.png").verify()
    assert "| difftune_blank |" in (out / "report.md").read_text()
    again = CliRunner().invoke(app, args)  # finished runs are reused, not retrained
    assert again.exit_code == 0 and "reusing" in again.output


def test_unknown_method_exits_naming_it(tmp_path):
    result = CliRunner().invoke(app, ["bench", "controlnet", "--out", str(tmp_path), "--base", str(tmp_path),
                                      "--target", str(tmp_path), "--heldout", str(tmp_path), "--method", "lora"])
    assert result.exit_code == 2 and "unknown 'lora'" in result.output
