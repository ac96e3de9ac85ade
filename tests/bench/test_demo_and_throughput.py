"""The demo pipeline end to end on a tiny budget, and the throughput benchmark's figures."""

from __future__ import annotations

import json

import pytest
from diffusers import DiTPipeline
from PIL import Image

from bench.demo import run_demo
from bench.throughput import BenchSetup, bench_bank, bench_training, build_dit


def test_demo_pipeline_builds_a_base_model_and_difftunes_it(tmp_path):
    lines = []
    small = {"bank": {"size": 16, "batch_size": 16, "num_inference_steps": 2}, "sample_steps": 2}
    result = run_demo(tmp_path, steps=4, base_steps=6, vae_steps=3, say=lines.append, **small)
    assert (tmp_path / "data" / "source" / "digit_0").is_dir()
    assert len(list((tmp_path / "data" / "target" / "digit_5").iterdir())) == 10  # 10 shots per class
    base = DiTPipeline.from_pretrained(result.base_model)
    assert base.labels == {f"digit_{i}": i for i in range(5)}
    tuned = DiTPipeline.from_pretrained(result.checkpoint)
    assert tuned.labels == {f"digit_{i}": i - 5 for i in range(5, 10)}
    meta = json.loads((result.checkpoint / "meta.json").read_text())
    assert meta["config"]["method"] == "difftune" and meta["step"] == 4
    with Image.open(result.samples) as grid:
        assert grid.size == (5 * 16 + 6 * 2, 4 * 16 + 5 * 2)  # 20 validation images, 5 per row
    assert any("diff-tuning" in line for line in lines)
    again = run_demo(tmp_path, steps=4, say=lines.append, **small)  # reuses the base model and the finished run
    assert again.base_model == result.base_model and "base model: reusing" in " ".join(lines)


@pytest.mark.parametrize("method", ["difftune", "standard"])
def test_training_benchmark_reports_consistent_figures(tmp_path, method):
    setup = BenchSetup(model="DiT-tiny/2", resolution=32, method=method, batch=8, steps=3, warmup=1, device="cpu")
    out = bench_training(setup, tmp_path)
    assert out["images_per_sec"] == pytest.approx(8 / (out["step_time_ms"] / 1e3))
    assert out["train_gflops_per_image"] > 0 and out["mfu"] is None and out["peak_memory_gb"] is None
    json.dumps(out)


def test_bank_benchmark_and_model_registry():
    out = bench_bank(BenchSetup(model="DiT-tiny/2", resolution=32, batch=4, device="cpu"), images=4, steps=2)
    assert out["images"] == 4 and out["images_per_sec"] > 0
    xl = build_dit("DiT-XL/2", 256)
    assert (xl.config.num_layers, xl.config.num_attention_heads * xl.config.attention_head_dim) == (28, 1152)
    # DiT-XL/2 has 675M parameters; diffusers repeats the timestep and label embedders in each of the
    # 28 blocks (27 extra copies of ~2.8M), which gives 750M.
    assert sum(p.numel() for p in xl.parameters()) == pytest.approx(750e6, rel=0.01)
    with pytest.raises(ValueError, match="unknown DiT"):
        build_dit("DiT-XXL/2", 256)
