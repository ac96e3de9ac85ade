"""The transfer benchmark and the forgetting probe end to end on a tiny budget, through the CLI."""

from __future__ import annotations

import json
import math

import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from bench.transfer import parse_method
from cli.main import app

from .conftest import write_class_folder

runner = CliRunner()
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _is_png(path) -> bool:
    with open(path, "rb") as f:
        if f.read(8) != PNG_MAGIC:
            return False
    with Image.open(path) as img:
        img.verify()
        return img.size[0] > 50 and img.size[1] > 50


def test_method_specs_parse_to_config_overrides():
    assert parse_method("standard") == {"method": "standard"}
    assert parse_method("difftune:bank.size=64:target_power=0.5") == {
        "method": "difftune", "bank": {"size": 64}, "target_power": 0.5}
    with pytest.raises(ValueError, match="unknown"):
        parse_method("magic")
    with pytest.raises(ValueError, match="field=value"):
        parse_method("difftune:bank_share")


def test_transfer_benchmark_smoke_and_probe(tiny_base, tmp_path):
    target = write_class_folder(tmp_path / "target", {"a": 4, "b": 4}, size=16, seed=1)
    heldout = write_class_folder(tmp_path / "heldout", {"a": 8, "b": 8}, size=16, seed=2)
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump(dict(resolution=16, batch_size=8, log_every=1, sample_steps=2, ema_warmup=True,
                                          learning_rate=1e-3, bank={"size": 8, "batch_size": 8,
                                                                    "num_inference_steps": 2})))
    out = tmp_path / "bench"
    args = ["bench", "transfer", "--base", str(tiny_base), "--target", str(target), "--heldout", str(heldout),
            "--config", str(config), "--out", str(out), "--seeds", "2", "--steps", "4", "--eval-every", "2",
            "--per-class", "3", "--method", "standard", "--method", "difftune:bank_share=0.25", "--guidance-mode", "both"]
    bad = runner.invoke(app, [*args, "--method", "difftune:bank_shares=0.5"])
    assert bad.exit_code == 2 and "bank_shares" in bad.output and not (out / "runs").exists()
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "[difftune:bank_share=0.25 seed 1] step 4" in result.output  # progress lines

    results = json.loads((out / "results.json").read_text())
    runs = {(r["method"], r["seed"]): r for r in results["runs"]}
    assert set(runs) == {(m, s) for m in ("standard", "difftune:bank_share=0.25") for s in (0, 1)}
    for run in runs.values():
        assert [e["step"] for e in run["evals"]] == [0, 2, 4]
        for ev in run["evals"]:
            assert set(ev["metrics"]) == {"1", "4", "4/dg"}  # both modes: CFG and Domain Guidance above 1
            for m in ev["metrics"].values():
                assert math.isfinite(m["fd"]) and m["fd"] >= 0 and 0 <= m["class_fidelity"] <= 1
    for seed in (0, 1):  # step 0 is the shared base model, scored once per seed
        assert runs[("standard", seed)]["evals"][0] == runs[("difftune:bank_share=0.25", seed)]["evals"][0]
    assert runs[("standard", 0)]["evals"][2] != runs[("standard", 1)]["evals"][2]
    cell = results["summary"]["standard"]["4"]["4"]["fd"]
    assert cell["n"] == 2 and cell["min"] <= cell["mean"] <= cell["max"]
    assert "not Inception" in results["extractor"]["kind"]
    assert all(_is_png(out / name) for name in ("fd_vs_step.png", "samples.png"))
    assert "| standard | 1 |" in (out / "report.md").read_text()
    assert runs[("standard", 0)]["evals"][0]["metrics"]["4"] == runs[("standard", 0)]["evals"][0]["metrics"]["4/dg"]
    assert runs[("standard", 0)]["evals"][2]["metrics"]["4"] != runs[("standard", 0)]["evals"][2]["metrics"]["4/dg"]
    paired = results["paired"]  # vs standard, by seed, from the saved features
    assert set(paired["difftune:bank_share=0.25"]) == {"1", "4", "4/dg", "4/dg vs CFG"}
    assert set(paired["standard"]) == {"4/dg vs CFG"}  # Domain Guidance's own effect on standard
    final = {key: run["evals"][-1]["metrics"] for key, run in runs.items()}
    for method, cells in paired.items():
        for label, cell in cells.items():
            setting = label.removesuffix(" vs CFG")
            baseline = setting.removesuffix("/dg") if label.endswith("vs CFG") else setting
            expected = [final[(method, s)][setting]["fd"] - final[("standard", s)][baseline]["fd"] for s in (0, 1)]
            assert cell["seeds"] == [0, 1]
            assert cell["diff_per_seed"] == pytest.approx(expected, rel=1e-4, abs=1e-4)
            assert cell["rel_ci95"][0] <= cell["rel_ci95"][1]
    assert "Paired differences vs `standard`" in (out / "report.md").read_text()

    again = runner.invoke(app, args)  # finished runs are reused, not retrained
    assert again.exit_code == 0 and again.output.count("reusing") == 4

    checkpoint = runs[("standard", 0)]["checkpoint"]
    probe = runner.invoke(app, ["analyze", "forgetting", "--base", str(tiny_base), "--tuned", checkpoint,
                                "--data", str(heldout), "--out", str(tmp_path / "probe"), "--points", "3",
                                "--per-class", "3", "--steps", "2", "--classifier", str(out / "domain_classifier")])
    assert probe.exit_code == 0, probe.output
    report = json.loads((tmp_path / "probe" / "probe.json").read_text())
    assert report["t_stars"] == [0, 500, 1000]
    for direction in ("tuned→base", "base→tuned"):
        assert [p["t_star"] for p in report["curves"][direction]["1"]] == [0, 500, 1000]
    ends = report["curves"]
    assert ends["tuned→base"]["1"][0]["fd"] == pytest.approx(ends["base→tuned"]["1"][-1]["fd"])  # tuned alone
    assert ends["tuned→base"]["1"][-1]["fd"] == pytest.approx(ends["base→tuned"]["1"][0]["fd"])  # base alone
    assert _is_png(tmp_path / "probe" / "probe.png")


def test_large_digits_preset_is_gpu_sized(tiny_base, tmp_path):
    from bench.demo import prepare_domains
    from bench.transfer import PRESETS, digits_preset
    from models.tiny import tiny_dit

    with pytest.raises(ValueError, match="preset: unknown 'cifar'"):
        digits_preset(tmp_path / "x", preset="cifar")
    prepare_domains(tmp_path / "data", resolution=16)  # prepared before with other settings: rewritten
    setup = digits_preset(tmp_path, preset="digits-large", base=tiny_base, steps=7)
    with Image.open(next((tmp_path / "data" / "target" / "digit_5").iterdir())) as img:
        assert img.size == (32, 32)
    assert sum(1 for _ in (tmp_path / "data" / "target_heldout" / "digit_9").iterdir()) == 160
    assert (setup.steps, setup.seeds, setup.eval_every, setup.per_class) == (7, 5, 500, 160)  # explicit wins
    assert setup.train["resolution"] == 32 and setup.train["bank"]["size"] == 2048
    assert setup.config("difftune", seed=3).batch_size == 64
    size = PRESETS["digits-large"].base_size
    dit = tiny_dit(sample_size=16, layers=size.dit_layers, heads=size.dit_heads, head_dim=size.dit_head_dim)
    assert sum(p.numel() for p in dit.parameters()) > 30e6  # DiT-S sized


def test_base_model_is_built_with_the_requested_size(tmp_path):
    from bench.demo import BaseModelSize, build_base_model, prepare_domains
    from models.families.dit import DiTFamily

    source = prepare_domains(tmp_path / "data", shots=2, held_out=2)["source"]
    size = BaseModelSize(vae_channels=(32, 64), dit_layers=1, dit_heads=2, dit_head_dim=8, batch_size=4)
    lines = []
    base = build_base_model(tmp_path, source, tmp_path / "cache", steps=1, vae_steps=1, size=size, say=lines.append)
    family = DiTFamily.from_pretrained(str(base))
    dit = family.denoiser.config
    assert (dit.num_layers, dit.num_attention_heads, dit.attention_head_dim) == (1, 2, 8)
    assert list(family.vae.config.block_out_channels) == [32, 64] and family.image_size == 16
    assert any("pre-training a DiT on 901 source images for 1 steps" in line for line in lines)


# --- text-to-image (flow matching): the SD3 form of the benchmark ----------------------------------------------


@pytest.fixture(scope="module")
def tiny_sd3(tmp_path_factory):
    from models.tiny import build_tiny_sd3_pipeline

    return build_tiny_sd3_pipeline(tmp_path_factory.mktemp("base") / "tiny_sd3", seed=0, resolution=16)


def test_evaluator_samples_text_models_with_the_class_prompts():
    import torch

    from models.evaluation.sample_quality import Evaluator, class_prompt

    class TextFamily:  # records what the evaluator asks a text-to-image family for
        name, denoiser, calls = "sd3", object(), []

        def generate_images(self, model, prompts, *, guidance, steps, generator, base=None):
            self.calls.append((model, prompts, guidance, steps))
            return torch.zeros(len(prompts), 3, 16, 16)

    assert class_prompt("a handwritten {name}", "digit_5") == "a handwritten digit 5"
    evaluator = Evaluator(classifier=None, real_features=torch.zeros(0), num_classes=2, per_class=2,
                          class_names=["digit_5", "digit_6"], prompt_template="a handwritten {name}", sample_steps=3)
    family = TextFamily()
    assert evaluator.sample(family, 4.0, seed=0).shape == (4, 3, 16, 16)
    assert family.calls == [(family.denoiser, ["a handwritten digit 5"] * 2 + ["a handwritten digit 6"] * 2, 4.0, 3)]
    evaluator.prompt_template = None
    with pytest.raises(ValueError, match="prompt_template"):
        evaluator.sample(family, 1.0, seed=0)


def test_transfer_benchmark_text_to_image_flow_matching(tiny_sd3, tmp_path):
    from bench.demo import caption_class_folders
    from bench.transfer import TransferSetup, run_transfer

    classes = write_class_folder(tmp_path / "target", {"cat": 3, "dog": 3}, size=16, seed=1)
    target = caption_class_folders(classes, tmp_path / "target_captioned", "a {name}")
    assert (target / "metadata.jsonl").read_text().splitlines()[0] == '{"file_name": "cat/0.png", "text": "a cat"}'
    heldout = write_class_folder(tmp_path / "heldout", {"cat": 4, "dog": 4}, size=16, seed=2)
    train = dict(family="sd3", resolution=16, batch_size=4, sample_steps=2, max_sequence_length=4, learning_rate=1e-3,
                 validation_labels=None, validation_prompts=["a cat"], bank_prompts=["a cow", "a yak"],
                 bank={"size": 4, "batch_size": 4, "num_inference_steps": 2})
    setup = TransferSetup(source=None, target=target, heldout=heldout, out=tmp_path / "bench", base=tiny_sd3,
                          methods=["standard", "difftune"], seeds=1, steps=2, eval_every=2, per_class=2, train=train,
                          prompt_template="a {name}", target_classes=classes)
    run_transfer(setup, say=lambda line: None)

    results = json.loads((tmp_path / "bench" / "results.json").read_text())
    assert {r["method"] for r in results["runs"]} == {"standard", "difftune"}
    for run in results["runs"]:
        assert run["config"]["family"] == "sd3" and [e["step"] for e in run["evals"]] == [0, 2]
        for ev in run["evals"]:
            assert set(ev["metrics"]) == {"1", "4"}
            assert all(math.isfinite(m["fd"]) and 0 <= m["class_fidelity"] <= 1 for m in ev["metrics"].values())
    assert results["extractor"]["val_accuracy"] is not None  # checked on the target's class folders
    assert _is_png(tmp_path / "bench" / "samples.png")


def test_sd3_digits_preset_trains_on_captioned_digits(tiny_sd3, tmp_path):
    from bench.transfer import digits_preset

    setup = digits_preset(tmp_path, preset="digits-sd3", base=tiny_sd3, steps=7)
    lines = [json.loads(line) for line in (setup.target / "metadata.jsonl").read_text().splitlines()]
    assert len(lines) == 50
    assert (lines[0]["text"], lines[-1]["text"]) == ("a handwritten digit 5", "a handwritten digit 9")
    assert (setup.target / lines[0]["file_name"]).is_file() and setup.target_classes == tmp_path / "data" / "target"
    assert setup.config("difftune", seed=0).family == "sd3" and setup.steps == 7 and setup.seeds == 3
    assert setup.train["bank_prompts"] == [f"a handwritten digit {k}" for k in range(5)]
    assert setup.train["validation_prompts"] == [f"a handwritten digit {k}" for k in range(5, 10)]
