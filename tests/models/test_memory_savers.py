"""Memory savers as TrainConfig options: each trains, checkpoints and resumes bit for bit, and the
checkpoint is still a full-precision diffusers pipeline."""

from __future__ import annotations

import pytest
import torch

from contract.train_config import ConfigError, parse_config

from .conftest import build_trainer, check_exact_resume, pipeline_class

pytestmark = pytest.mark.usefixtures("one_thread")


def test_8bit_adamw_keeps_its_moments_in_8_bits_and_resumes_exactly(make_config, image_folder, tmp_path):
    config = make_config(optimizer="adamw_8bit")
    trainer = check_exact_resume(config, image_folder, tmp_path, stop_at=2)
    assert type(trainer.optimizer).__module__.startswith("bitsandbytes")
    dtypes = {v.dtype for state in trainer.optimizer.state.values() for v in state.values() if torch.is_tensor(v)}
    assert torch.uint8 in dtypes  # the large matrices' moments are quantised


def test_cpu_ema_lives_in_host_memory_and_resumes_exactly(make_config, image_folder, tmp_path):
    trainer = check_exact_resume(make_config(ema_device="cpu"), image_folder, tmp_path, stop_at=2)
    assert {s.device.type for s in trainer.ema.shadow} == {"cpu"}
    assert all(s.dtype == torch.float32 for s in trainer.ema.shadow)


@pytest.mark.parametrize(("family", "peft"), [("dit", "difffit"), ("sd", "lora"), ("flux", "lora")])
def test_a_bf16_base_trains_resumes_and_exports_fp32(make_config, make_family_config, image_folder, caption_folder,
                                                     tiny_pipeline, tmp_path, family, peft):
    savers = dict(peft=peft, base_precision="bf16", mixed_precision="bf16")
    config = make_config(**savers) if family == "dit" else make_family_config(family, **savers)
    data = image_folder if family == "dit" else caption_folder
    # bf16 UNet/MMDiT kernels on this CPU differ in the last bits between two fresh runs (the DiT's do not)
    trainer = check_exact_resume(config, data, tmp_path, stop_at=2, rel=0.0 if family == "dit" else 2e-3)
    frozen = [p for p in trainer.module.parameters() if not p.requires_grad]
    trained = [p for p in trainer.module.parameters() if p.requires_grad]
    assert frozen and {p.dtype for p in frozen} == {torch.bfloat16} and {p.dtype for p in trained} == {torch.float32}
    if family != "dit":  # the checkpoint is an ordinary fp32 pipeline, of the base's own weights
        checkpoint = trainer.save_checkpoint()
        pipe = pipeline_class(family).from_pretrained(checkpoint)
        net = getattr(pipe, trainer.family.denoiser_part)
        assert {p.dtype for p in net.parameters()} == {torch.float32}
        original = base_denoiser(family, tiny_pipeline(family)).state_dict()
        assert all(torch.equal(net.state_dict()[k], v) for k, v in original.items())  # not bf16-rounded


def test_a_bf16_base_needs_bf16_compute(make_config, image_folder, tmp_path):
    with pytest.raises(ConfigError, match="base_precision: only peft lora or difffit"):
        parse_config({"peft": "full", "base_precision": "bf16"})
    with pytest.raises(ConfigError, match="base_precision: a bf16 base needs bf16 compute"):
        parse_config({"peft": "lora", "base_precision": "bf16", "mixed_precision": "no"})
    # mixed_precision auto computes in fp32 on the CPU: refused before any step, naming the fix
    with pytest.raises(ValueError, match="set mixed_precision: bf16"):
        build_trainer(make_config(peft="lora", base_precision="bf16"), image_folder, tmp_path / "o", tmp_path / "c")


@pytest.mark.parametrize("family", ["sdxl", "flux"])
def test_text_encoders_in_host_memory_still_encode_the_bank_and_samples(make_family_config, caption_folder, tmp_path,
                                                                       family):
    config = make_family_config(family, text_encoder_device="cpu", max_steps=2, sample_every=2)
    trainer = build_trainer(config, caption_folder, tmp_path / "o", tmp_path / "c")
    fam = trainer.family
    assert fam.text_device == torch.device("cpu")
    assert {p.device.type for enc in fam.text_encoders() for p in enc.parameters()} == {"cpu"}
    result = trainer.fit()
    assert result.step == 2 and (tmp_path / "o" / "samples" / "step_0000002.png").exists()
    with pytest.raises(ConfigError, match="text_encoder_device: dit has no text encoders"):
        parse_config({"text_encoder_device": "cpu"})


@pytest.mark.parametrize("family", ["dit", "sd", "controlnet", "sdxl", "sd3", "flux"])
def test_gradient_checkpointing_recomputes_the_same_steps(make_config, make_sd_config, make_family_config,
                                                          image_folder, caption_folder, tmp_path, family):
    """Every family's denoiser checkpoints its blocks (diffusers' own switch) and trains the same steps."""
    def losses(checkpointing: bool) -> tuple[list[float], bool]:
        overrides = dict(gradient_checkpointing=checkpointing)
        if family == "dit":
            config, data = make_config(**overrides), image_folder
        elif family == "controlnet":
            config, data = make_sd_config(family="controlnet", **overrides), caption_folder
        else:
            config, data = make_family_config(family, **overrides), caption_folder
        trainer = build_trainer(config, data, tmp_path / f"o{checkpointing}", tmp_path / "c")
        return [trainer.train_step()["loss"].item() for _ in range(2)], trainer.module.is_gradient_checkpointing

    plain, off = losses(False)
    recomputed, on = losses(True)
    assert on and not off
    assert recomputed == pytest.approx(plain, rel=1e-5)


# --- a base held in fp8 or nf4 (QLoRA) ------------------------------------------------------------------
def held_layers(module, precision: str) -> list[str]:
    """Names (as in the base model) of the layers stored in fp8 or 4 bits."""
    import bitsandbytes as bnb
    from torch.nn.utils import parametrize

    def held(m) -> bool:
        return isinstance(m, bnb.nn.Linear4bit) if precision == "nf4" else parametrize.is_parametrized(m, "weight")

    return [name.replace(".base_layer", "") for name, m in module.named_modules() if held(m)]


def base_denoiser(family: str, folder):
    """The base model's denoiser as its files hold it."""
    return getattr(pipeline_class(family).from_pretrained(folder), "unet" if family in ("sd", "sdxl") else "transformer")


@pytest.mark.parametrize("precision", ["fp8", "nf4"])
@pytest.mark.parametrize("family", ["sd", "flux"])
def test_a_quantised_base_trains_resumes_and_exports_the_original_weights(make_family_config, caption_folder,
                                                                          tiny_pipeline, tmp_path, family, precision):
    import bitsandbytes as bnb
    from peft.tuners.lora import bnb as peft_bnb

    from models.memory_savers import NF4_BLOCKS

    config = make_family_config(family, peft="lora", base_precision=precision, mixed_precision="bf16",
                                gradient_checkpointing=True)
    # as with a bf16 base: the UNet/MMDiT bf16 kernels on this CPU differ in the last bits between two fresh
    # runs (measured: 4-step losses of two unbroken nf4, fp8 and bf16 runs differ by ~4e-4 relative)
    trainer = check_exact_resume(config, caption_folder, tmp_path, stop_at=2, rel=2e-3)
    module = trainer.module
    layers = held_layers(module, precision)
    in_blocks = [NF4_BLOCKS.search(n + ".") is not None for n in layers]
    # nf4: the transformer blocks' linears only; fp8: diffusers' choice, convolutions and embeddings too
    assert layers and (all(in_blocks) if precision == "nf4" else not all(in_blocks))
    if precision == "nf4":  # peft wrapped the 4-bit layers with its bitsandbytes LoRA layer
        assert any(isinstance(m, peft_bnb.Linear4bit) for m in module.modules())
        assert all(type(m.get_base_layer()) is bnb.nn.Linear4bit for m in module.modules()
                   if isinstance(m, peft_bnb.Linear4bit))
    else:
        assert torch.float8_e4m3fn in {p.dtype for p in module.parameters()}
    trained = {n: p for n, p in module.named_parameters() if p.requires_grad}
    assert trained and all("lora_" in n and p.dtype == torch.float32 for n, p in trained.items())
    assert any(p.abs().sum() > 0 for n, p in trained.items() if "lora_B" in n)  # B starts at zero: LoRA trained
    assert torch.isfinite(trainer.train_step()["loss"])

    checkpoint = trainer.save_checkpoint()
    net = getattr(pipeline_class(family).from_pretrained(checkpoint), trainer.family.denoiser_part)
    base = base_denoiser(family, tiny_pipeline(family))
    exported, original = net.state_dict(), base.state_dict()
    assert exported.keys() == original.keys()
    assert torch.equal(exported[f"{layers[0]}.weight"], original[f"{layers[0]}.weight"])  # not its fp8/nf4 copy
    assert all(torch.equal(exported[k], original[k]) for k in original)  # the whole base, exactly
    assert (checkpoint / "lora" / "pytorch_lora_weights.safetensors").exists()


def test_nf4_lora_merges_into_the_original_weights(make_family_config, caption_folder, tiny_pipeline, tmp_path):
    from safetensors.torch import load_file

    from models.lora_kohya import KOHYA_WEIGHTS

    config = make_family_config("sd", peft="lora", base_precision="nf4", mixed_precision="bf16", lora_merge=True,
                                lora_format="kohya", max_steps=1)
    trainer = build_trainer(config, caption_folder, tmp_path / "o", tmp_path / "c")
    trainer.train_step()
    layer = held_layers(trainer.module, "nf4")[0]
    ema = trainer.ema_model()
    delta = ema.get_submodule(layer).get_delta_weight("default")
    assert delta.abs().sum() > 0
    checkpoint = trainer.save_checkpoint()
    net = pipeline_class("sd").from_pretrained(checkpoint).unet
    original = base_denoiser("sd", tiny_pipeline("sd")).get_submodule(layer).weight
    assert torch.equal(net.get_submodule(layer).weight, original + delta)
    # the adapter itself, as from any LoRA run: diffusers' format and kohya's (its keys name the same layers)
    diffusers_keys = load_file(checkpoint / "lora" / "pytorch_lora_weights.safetensors").keys()
    kohya_keys = load_file(checkpoint / "lora" / KOHYA_WEIGHTS).keys()
    assert len([k for k in kohya_keys if k.endswith(".lora_down.weight")]) == len(diffusers_keys) // 2


def test_an_fp8_base_under_difffit_trains_its_biases_in_fp32(make_config, tiny_base, image_folder, tmp_path):
    from diffusers import DiTTransformer2DModel

    config = make_config(peft="difffit", base_precision="fp8", mixed_precision="bf16", gradient_checkpointing=True)
    trainer = check_exact_resume(config, image_folder, tmp_path, stop_at=2)  # the DiT's kernels: exact
    module = trainer.module
    layers = held_layers(module, "fp8")
    assert layers and all(p.dtype == torch.float32 for p in module.parameters() if p.requires_grad)
    held_bias = module.get_submodule(layers[0]).bias
    assert held_bias.requires_grad and held_bias.dtype == torch.float32  # DiffFit's, inside an fp8 layer
    net = trainer.family.export_denoiser(trainer.ema_model()).state_dict()
    base = DiTTransformer2DModel.from_pretrained(tiny_base, subfolder="transformer").state_dict()
    # the frozen weights are exactly the base's, but where DiffFit's γ folds into them (each branch's last
    # linear); the biases trained
    unfolded = [n for n in layers if not n.endswith(("to_out.0", "ff.net.2"))]
    assert unfolded and all(torch.equal(net[f"{n}.weight"], base[f"{n}.weight"]) for n in unfolded)
    assert all(net[f"{n}.weight"].dtype == torch.float32 for n in layers)
    assert not torch.equal(net[f"{layers[0]}.bias"], base[f"{layers[0]}.bias"])


def test_originals_missing_from_the_base_files_are_kept_on_the_host(tiny_pipeline):
    from models.base_originals import keep_originals, restore_base
    from models.memory_savers import hold_frozen_base, quantise_nf4

    folder = tiny_pipeline("flux")
    net = base_denoiser("flux", folder).requires_grad_(False)
    changed = "transformer_blocks.0.attn.to_q.weight"
    with torch.no_grad():
        net.get_parameter(changed).add_(1.0)  # no longer what the files hold
    expected = {k: v.clone() for k, v in net.state_dict().items()}
    originals = keep_originals(net, str(folder))
    assert list(originals.kept) == [changed] and len(originals.files) == len(expected) - 1
    quantise_nf4(net)
    hold_frozen_base(net, "nf4")
    restored = restore_base(net).state_dict()
    assert restored.keys() == expected.keys() and all(torch.equal(restored[k], v) for k, v in expected.items())
    # a model built in memory: every original is a host copy
    assert len(keep_originals(base_denoiser("flux", folder).requires_grad_(False), "").kept) == len(expected)


def test_quantised_bases_are_lora_or_difffit_options():
    with pytest.raises(ConfigError, match="base_precision: nf4 \\(QLoRA\\) needs peft: lora, not difffit; DiffFit"):
        parse_config({"peft": "difffit", "base_precision": "nf4"})
    with pytest.raises(ConfigError, match="base_precision: nf4 \\(QLoRA\\) needs peft: lora, not full"):
        parse_config({"peft": "full", "base_precision": "nf4"})
    with pytest.raises(ConfigError, match="base_precision: only peft lora or difffit freeze a base to hold in fp8"):
        parse_config({"peft": "full", "base_precision": "fp8", "gradient_checkpointing": True})
    with pytest.raises(ConfigError, match="base_precision: fp8 needs gradient_checkpointing: true"):
        parse_config({"peft": "lora", "base_precision": "fp8"})
    with pytest.raises(ConfigError, match="base_precision: a nf4 base needs bf16 compute"):
        parse_config({"peft": "lora", "base_precision": "nf4", "mixed_precision": "no"})
    assert parse_config({"peft": "difffit", "base_precision": "fp8", "gradient_checkpointing": True})


def test_a_resumed_run_may_hold_its_base_otherwise(make_family_config, caption_folder, tiny_pipeline, tmp_path):
    """The service lets a resumed job change base_precision (e.g. after running out of memory): the
    checkpoint's trained tensors load, the frozen base is the new run's own, rebuilt from the base model."""
    from models import checkpoints as ckpt

    def config(precision: str, **overrides):
        return make_family_config("sd", peft="lora", base_precision=precision, mixed_precision="bf16",
                                  gradient_checkpointing=True, **overrides)

    first = build_trainer(config("nf4", max_steps=2), caption_folder, tmp_path / "o", tmp_path / "c")
    first.fit()
    trained = {n: p.detach().clone() for n, p in first.module.named_parameters() if p.requires_grad}
    for precision in ("fp8", "fp32", "nf4"):
        resumed = build_trainer(config(precision), caption_folder, tmp_path / "o", tmp_path / "c")
        resumed.resume(ckpt.latest_checkpoint(tmp_path / "o"))
        assert resumed.step == 2
        now = {n: p for n, p in resumed.module.named_parameters() if p.requires_grad}
        assert now.keys() == trained.keys() and all(torch.equal(now[n], v) for n, v in trained.items())
        assert torch.isfinite(resumed.train_step()["loss"])
    # the fp32 run trains on the exact base, not on one read back from the 4-bit checkpoint
    base = base_denoiser("sd", tiny_pipeline("sd")).state_dict()
    fp32 = build_trainer(config("fp32"), caption_folder, tmp_path / "o", tmp_path / "c")
    fp32.resume(ckpt.latest_checkpoint(tmp_path / "o"))
    plain = {n.replace(".base_layer", ""): p for n, p in fp32.module.state_dict().items() if "lora_" not in n}
    assert plain.keys() == base.keys() and all(torch.equal(plain[k], v) for k, v in base.items())
