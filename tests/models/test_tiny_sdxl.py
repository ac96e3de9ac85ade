"""The tiny offline SDXL pipeline: written by ``difftune tiny sdxl``, loaded by diffusers, generating."""

from __future__ import annotations

import json

import torch
from typer.testing import CliRunner

from cli.main import app


def test_tiny_sdxl_is_a_diffusers_pipeline_with_text_time_conditioning(tmp_path):
    from diffusers import StableDiffusionXLPipeline

    result = CliRunner().invoke(app, ["tiny", "sdxl", str(tmp_path / "sdxl")])
    assert result.exit_code == 0, result.output
    index = json.loads((tmp_path / "sdxl" / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionXLPipeline"
    assert index["unet"] == ["diffusers", "UNet2DConditionModel"]
    assert index["text_encoder"] == ["transformers", "CLIPTextModel"]
    assert index["text_encoder_2"] == ["transformers", "CLIPTextModelWithProjection"]
    assert index["scheduler"] == ["diffusers", "EulerDiscreteScheduler"]
    assert index["force_zeros_for_empty_prompt"] is True
    pipe = StableDiffusionXLPipeline.from_pretrained(tmp_path / "sdxl")
    assert pipe.unet.config.addition_embed_type == "text_time"
    assert pipe.unet.config.cross_attention_dim == (pipe.text_encoder.config.hidden_size
                                                    + pipe.text_encoder_2.config.hidden_size)
    assert pipe.scheduler.config.timestep_spacing == "leading"
    out = pipe("a red cat", num_inference_steps=2, height=16, width=16, output_type="np",
               generator=torch.Generator().manual_seed(0)).images
    assert out.shape == (1, 16, 16, 3) and 0 <= out.min() and out.max() <= 1
