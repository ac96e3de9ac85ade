"""Every GPU figure the project claims, in one process and one JSON file (``bench/gpu_suite.sh``).

GPU time comes in short windows, so the suite runs its measurements in order of importance under a
wall-clock budget, keeps going past a failure or an out-of-memory (recorded as such), and writes the
file after every measurement, so a run cut short still leaves what it measured. ``--tiny`` runs the
same list on the test-sized models, which is how CI and a CPU check it.

    python -m bench.gpu_suite --out gpu_suite.json [--budget 420] [--tiny] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from bench.throughput import (
    BenchSetup,
    bench_bank,
    bench_diffusers_baseline,
    bench_memory_plan,
    bench_training,
)


@dataclass(frozen=True)
class Measurement:
    """One figure: a name, what it runs and the target it is checked against (if any)."""

    name: str
    kind: str  # train | bank | baseline | plan
    setup: BenchSetup
    target: str = ""


def suite(tiny: bool, device: str) -> list[Measurement]:
    """The suite in order of importance; ``tiny`` swaps every model for its test-sized twin."""
    def s(model: str, tiny_model: str, resolution: int, tiny_resolution: int, **kw) -> BenchSetup:
        steps = dict(steps=2, warmup=1) if tiny else dict(steps=10, warmup=3)
        return BenchSetup(model=tiny_model if tiny else model, resolution=tiny_resolution if tiny else resolution,
                          device=device, **{**steps, **kw})

    dit = s("DiT-XL/2", "DiT-tiny/2", 256, 16, batch=4 if tiny else 256)
    sd15 = s("SD-1.5", "SD-tiny", 512, 16, batch=4 if tiny else 32)
    sdxl = s("SDXL", "SDXL-tiny", 1024, 16, batch=2 if tiny else 8)
    sd35 = s("SD3.5-medium", "SD3-tiny", 1024, 16, batch=2 if tiny else 8)
    flux = s("Flux.1-dev", "Flux-tiny", 1024, 16, batch=2 if tiny else 2, peft="lora",
             gradient_checkpointing=not tiny)
    return [
        Measurement("dit_xl2_difftune_compiled", "train", replace(dit, compile=not tiny), "≥ 640 img/s on an H100"),
        Measurement("dit_xl2_standard_compiled", "train", replace(dit, compile=not tiny, method="standard"),
                    "Diff-Tuning overhead ≤ 3% per image"),
        Measurement("dit_xl2_difftune_eager", "train", dit),
        Measurement("dit_xl2_bank", "bank", replace(dit, batch=4 if tiny else 256), "≥ 40 img/s"),
        Measurement("sd15_difftune", "train", sd15),
        Measurement("sd15_diffusers_train_text_to_image", "baseline", sd15, "ours faster"),
        Measurement("sdxl_difftune_full", "train", sdxl),
        Measurement("sdxl_diffusers_train_text_to_image_sdxl", "baseline", sdxl, "ours ≥ 1.5×"),
        Measurement("sdxl_standard_full", "train", replace(sdxl, method="standard")),
        Measurement("sdxl_difftune_lora", "train", replace(sdxl, peft="lora")),
        Measurement("sd35_medium_difftune_full", "train", sd35),
        Measurement("sd35_medium_standard_full", "train", replace(sd35, method="standard")),
        Measurement("sd35_medium_difftune_lora", "train", replace(sd35, peft="lora")),
        Measurement("flux_dev_difftune_lora", "train", flux),
        Measurement("flux_dev_standard_lora", "train", replace(flux, method="standard")),
        # memory savers (issue 13): peak memory and images/s with each, against the rows above
        Measurement("flux_dev_difftune_lora_bf16_base", "train", replace(flux, base_precision="bf16")),
        Measurement("flux_dev_difftune_lora_fp8_base", "train", replace(
            flux, base_precision="fp8", gradient_checkpointing=True)),
        Measurement("flux_dev_difftune_lora_nf4_base", "train", replace(flux, base_precision="nf4")),
        Measurement("flux_dev_difftune_lora_all_savers", "train", replace(
            flux, base_precision="bf16", optimizer="adamw_8bit", ema_device="cpu")),
        Measurement("sdxl_difftune_full_8bit_adam", "train", replace(sdxl, optimizer="adamw_8bit")),
        Measurement("sdxl_difftune_full_cpu_ema", "train", replace(sdxl, ema_device="cpu")),
        Measurement("sdxl_difftune_full_checkpointing", "train", replace(sdxl, gradient_checkpointing=True)),
        Measurement("sdxl_difftune_lora_all_savers", "train", replace(
            sdxl, peft="lora", base_precision="bf16", optimizer="adamw_8bit", ema_device="cpu",
            gradient_checkpointing=True)),
        Measurement("sdxl_difftune_lora_nf4_base", "train", replace(sdxl, peft="lora", base_precision="nf4")),
        # the memory plan's accounting against the measured peak of the same step
        Measurement("sdxl_full_memory_plan", "plan", sdxl, "accounted within 10% of the peak"),
        Measurement("flux_dev_lora_memory_plan", "plan", replace(flux, base_precision="bf16"),
                    "accounted within 10% of the peak"),
        Measurement("flux_dev_lora_nf4_memory_plan", "plan", replace(flux, base_precision="nf4"),
                    "accounted within 10% of the peak"),
    ]


RUNNERS: dict[str, Callable[..., dict[str, Any]]] = {
    "train": lambda setup, tmp: bench_training(setup, tmp),
    "bank": lambda setup, tmp: bench_bank(setup, images=8 if setup.device == "cpu" else 512,
                                          steps=2 if setup.device == "cpu" else 50),
    "baseline": lambda setup, tmp: bench_diffusers_baseline(setup),
    "plan": lambda setup, tmp: bench_memory_plan(setup, tmp),
}


def machine() -> dict[str, Any]:
    cuda = torch.cuda.is_available()
    return {"torch": torch.__version__, "python": platform.python_version(), "host_cpu": platform.processor(),
            "gpu": torch.cuda.get_device_name(0) if cuda else None,
            "gpu_memory_gb": torch.cuda.get_device_properties(0).total_memory / 2**30 if cuda else None}


def run_suite(out: Path, *, budget_s: float, tiny: bool, device: str, only: list[str] | None = None,
              say: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the suite (or the measurements named in ``only``) within ``budget_s``; write ``out`` as it goes."""
    started = time.perf_counter()
    report: dict[str, Any] = {"machine": machine(), "budget_s": budget_s, "tiny": tiny, "results": []}
    for m in suite(tiny, device):
        if only and m.name not in only:
            continue
        elapsed = time.perf_counter() - started
        entry: dict[str, Any] = {"name": m.name, "target": m.target}
        if elapsed > budget_s:
            entry["skipped"] = f"budget of {budget_s:.0f} s spent"
        else:
            say(f"[{elapsed:6.0f} s] {m.name}")
            entry.update(measure(m))
        report["results"].append(entry)
        report["seconds"] = time.perf_counter() - started
        out.write_text(json.dumps(report, indent=2))
    return report


def measure(m: Measurement) -> dict[str, Any]:
    """One measurement; an error (an OOM included) is recorded, not raised."""
    try:
        with tempfile.TemporaryDirectory() as tmp:
            return {"result": RUNNERS[m.kind](m.setup, Path(tmp))}
    except Exception as err:  # noqa: BLE001 - the suite records any failure and moves on
        oom = isinstance(err, torch.cuda.OutOfMemoryError)
        return {"error": f"{type(err).__name__}: {err}"[:2000], "out_of_memory": oom,
                "traceback": traceback.format_exc(limit=3)[-2000:]}
    finally:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--budget", type=float, default=420.0, help="seconds before the rest is skipped")
    parser.add_argument("--tiny", action="store_true", help="test-sized models (a CPU check of the suite)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--only", nargs="*", help="run only these measurement names")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    report = run_suite(args.out, budget_s=args.budget, tiny=args.tiny, device=args.device, only=args.only)
    failed = [r["name"] for r in report["results"] if "error" in r]
    print(json.dumps({"out": str(args.out), "measured": len(report["results"]) - len(failed), "failed": failed}))


if __name__ == "__main__":
    main()
