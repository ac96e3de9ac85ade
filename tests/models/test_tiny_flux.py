"""The tiny offline Flux pipeline: written by ``difftune tiny flux``, loaded by diffusers, generating."""

from __future__ import annotations

import json

import torch
from typer.testing import CliRunner

from cli.main import app


def test_tiny_flux_is_a_guidance_distilled_diffusers_pipeline(tmp_path):
    from diffusers import FluxPipeline

    result = CliRunner().invoke(app, ["tiny", "flux", str(tmp_path / "flux")])
    assert result.exit_code == 0, result.output
    index = json.loads((tmp_path / "flux" / "model_index.json").read_text())
    assert index["_class_name"] == "FluxPipeline"
    assert index["transformer"] == ["diffusers", "FluxTransformer2DModel"]
    assert index["text_encoder"] == ["transformers", "CLIPTextModel"]
    assert index["text_encoder_2"] == ["transformers", "T5EncoderModel"]
    assert index["tokenizer_2"][1] in ("T5Tokenizer", "T5TokenizerFast")
    assert index["scheduler"] == ["diffusers", "FlowMatchEulerDiscreteScheduler"]
    pipe = FluxPipeline.from_pretrained(tmp_path / "flux")
    assert pipe.transformer.config.guidance_embeds is True
    assert pipe.scheduler.config.use_dynamic_shifting is True
    assert sum(pipe.transformer.config.axes_dims_rope) == pipe.transformer.config.attention_head_dim
    assert pipe.vae.config.shift_factor == 0.0 and pipe.vae.config.scaling_factor == 1.0
    out = pipe("a red cat", num_inference_steps=2, height=16, width=16, guidance_scale=3.5, max_sequence_length=16,
               output_type="np", generator=torch.Generator().manual_seed(0)).images
    assert out.shape == (1, 16, 16, 3) and 0 <= out.min() and out.max() <= 1
