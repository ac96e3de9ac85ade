"""Throughput benchmark on random SD / ControlNet families (tiny on CPU; SD-1.5 is shape-checked)."""

from __future__ import annotations

import pytest

from bench.throughput import BenchSetup, bench_training
from bench.throughput_sd import build_sd_unet

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize(("model", "method", "peft"), [
    ("SD-tiny", "difftune", "full"), ("SD-tiny", "standard", "lora"),
    ("SD-tiny+ControlNet", "difftune", "lora"), ("SD-tiny+ControlNet", "standard", "full")])
def test_sd_benchmark_runs_the_real_step(tmp_path, model, method, peft):
    setup = BenchSetup(model=model, resolution=16, method=method, peft=peft, batch=4, steps=2, warmup=1,
                       device="cpu")
    out = bench_training(setup, tmp_path)
    assert out["images_per_sec"] == pytest.approx(4 / (out["step_time_ms"] / 1e3))
    assert out["train_gflops_per_image"] > 0
    assert (out["trainable_params_m"] < 0.1 * out["params_m"]) == (peft == "lora")


@pytest.mark.slow
def test_sd15_unet_has_the_sd15_architecture():
    unet = build_sd_unet("SD-1.5", 512)
    assert unet.config.sample_size == 64 and unet.config.cross_attention_dim == 768
    assert sum(p.numel() for p in unet.parameters()) == pytest.approx(860e6, rel=0.01)


def test_diffusers_baseline_step_runs_on_the_tiny_sd(tmp_path):
    from bench.throughput import bench_diffusers_baseline

    out = bench_diffusers_baseline(BenchSetup(model="SD-tiny", resolution=16, batch=2, steps=2, warmup=1,
                                              device="cpu"))
    assert out["benchmark"] == "diffusers_train_text_to_image" and out["images_per_sec"] > 0
    with pytest.raises(ValueError, match="not 'DiT-tiny/2'"):
        bench_diffusers_baseline(BenchSetup(model="DiT-tiny/2", device="cpu"))
