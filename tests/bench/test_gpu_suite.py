"""The GPU suite and the SDXL / SD3.5 / Flux.1 throughput benchmarks, on the test-sized models (CPU)."""

from __future__ import annotations

import json

import pytest
import torch

from bench.gpu_suite import run_suite, suite
from bench.throughput import BenchSetup, bench_diffusers_baseline, bench_training
from bench.throughput_modern import (
    MODERN_MODELS,
    flux_dev_transformer,
    sd35_medium_transformer,
    sdxl_unet,
    synthetic_modern_family,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize(("model", "method", "peft"), [
    ("SDXL-tiny", "difftune", "full"), ("SD3-tiny", "standard", "lora"), ("Flux-tiny", "difftune", "lora")])
def test_modern_benchmark_runs_the_real_step(tmp_path, model, method, peft):
    out = bench_training(BenchSetup(model=model, resolution=16, method=method, peft=peft, batch=2, steps=2,
                                    warmup=1, device="cpu"), tmp_path)
    assert out["images_per_sec"] == pytest.approx(2 / (out["step_time_ms"] / 1e3))
    assert out["train_gflops_per_image"] > 0
    assert (out["trainable_params_m"] < 0.5 * out["params_m"]) == (peft == "lora")


def test_sdxl_baseline_is_diffusers_sdxl_script_step():
    out = bench_diffusers_baseline(BenchSetup(model="SDXL-tiny", resolution=16, batch=2, steps=2, warmup=1,
                                              device="cpu"))
    assert out["benchmark"] == "diffusers_train_text_to_image_sdxl" and out["images_per_sec"] > 0
    with pytest.raises(ValueError, match="not 'Flux-tiny'"):
        bench_diffusers_baseline(BenchSetup(model="Flux-tiny", device="cpu"))


def checkpoint_size(build) -> int:
    """Numbers in the state dict (what the published checkpoint holds) of a model built on no memory."""
    with torch.device("meta"):
        return sum(v.numel() for v in build(1024).state_dict().values())


def test_real_size_models_have_the_published_sizes():
    """SDXL's UNet (2.567B), SD3.5-medium's MMDiT (2.47B with its positional table), Flux.1-dev's (11.9B)."""
    assert checkpoint_size(sdxl_unet) == pytest.approx(2.567e9, rel=0.005)
    assert checkpoint_size(sd35_medium_transformer) == pytest.approx(2.47e9, rel=0.005)
    assert checkpoint_size(flux_dev_transformer) == pytest.approx(11.9e9, rel=0.005)


def test_synthetic_family_tables_have_the_real_text_shapes():
    family, latents, bank = synthetic_modern_family("SD3-tiny", 16, "cpu", n=4)
    assert family.latent_shape == tuple(latents.mean.shape[2:]) and len(bank.latents) == 4
    with pytest.raises(ValueError, match="model: unknown model 'SD4'"):
        synthetic_modern_family("SD4", 16, "cpu")
    spec = MODERN_MODELS["Flux.1-dev"]
    assert (spec.text_tokens, spec.text_width, spec.pooled_width) == (512, 4096, 768)


def test_tiny_suite_measures_everything_and_records_failures(tmp_path, monkeypatch):
    out = tmp_path / "suite.json"
    names = [m.name for m in suite(tiny=True, device="cpu")]
    report = run_suite(out, budget_s=600, tiny=True, device="cpu", say=lambda _: None)
    assert json.loads(out.read_text()) == report
    results = {r["name"]: r for r in report["results"]}
    assert list(results) == names
    failed = {n: r["error"] for n, r in results.items() if "error" in r}
    assert not failed
    assert all(r["result"]["images_per_sec"] > 0 for r in results.values()
               if r["result"]["benchmark"] != "memory_plan")
    plan = results["sdxl_full_memory_plan"]["result"]
    assert plan["accounted_gb"] > 0 and plan["parts_gb"]["activations"] > 0 and plan["measured_peak_gb"] is None
    assert results["sdxl_diffusers_train_text_to_image_sdxl"]["result"]["benchmark"].endswith("_sdxl")
    # a 4-bit base counts its weights, not its packed bytes
    lora, nf4 = (results[f"flux_dev_difftune_lora{s}"]["result"] for s in ("", "_nf4_base"))
    assert nf4["params_m"] == pytest.approx(lora["params_m"]) and nf4["base_precision"] == "nf4"
    # a failing measurement is recorded and the suite goes on; a spent budget skips the rest
    from bench import gpu_suite

    monkeypatch.setitem(gpu_suite.RUNNERS, "bank", lambda setup, tmp: 1 / 0)
    report = run_suite(out, budget_s=600, tiny=True, device="cpu", say=lambda _: None,
                       only=["dit_xl2_bank", "sd15_difftune"])
    assert [r["name"] for r in report["results"]] == ["dit_xl2_bank", "sd15_difftune"]
    assert report["results"][0]["error"].startswith("ZeroDivisionError") and "result" in report["results"][1]
    report = run_suite(out, budget_s=0, tiny=True, device="cpu", say=lambda _: None, only=["sd15_difftune"])
    assert report["results"][0]["skipped"].startswith("budget")
