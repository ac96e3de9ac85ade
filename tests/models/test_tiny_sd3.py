"""The tiny offline SD3 pipeline: written by ``difftune tiny sd3``, loaded by diffusers, generating."""

from __future__ import annotations

import json

import torch
from typer.testing import CliRunner

from cli.main import app


def test_tiny_sd3_is_a_diffusers_pipeline_with_all_three_text_encoders(tmp_path):
    from diffusers import StableDiffusion3Pipeline

    result = CliRunner().invoke(app, ["tiny", "sd3", str(tmp_path / "sd3")])
    assert result.exit_code == 0, result.output
    index = json.loads((tmp_path / "sd3" / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusion3Pipeline"
    assert index["text_encoder_3"] == ["transformers", "T5EncoderModel"]
    assert index["tokenizer_3"][1] in ("T5Tokenizer", "T5TokenizerFast")
    pipe = StableDiffusion3Pipeline.from_pretrained(tmp_path / "sd3")
    ids = pipe.tokenizer_3("a red cat").input_ids
    assert pipe.tokenizer_3.unk_token_id not in ids and ids[-1] == pipe.tokenizer_3.eos_token_id
    assert pipe.tokenizer_3.decode(ids, skip_special_tokens=True) == "a red cat"
    out = pipe("a red cat", num_inference_steps=2, height=16, width=16, guidance_scale=2.0, output_type="np",
               max_sequence_length=16, generator=torch.Generator().manual_seed(0)).images
    assert out.shape == (1, 16, 16, 3) and 0 <= out.min() and out.max() <= 1
