"""Tiny random pipelines built offline, for tests, demos and CPU benchmarks.

No downloads: every component is constructed from a config. The DiT pipeline here is a real
diffusers folder that ``DiTPipeline.from_pretrained`` loads.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDPMScheduler, DiTPipeline, DiTTransformer2DModel


def tiny_vae(latent_channels: int = 4, channels: tuple[int, int] = (32, 64), norm_groups: int = 32,
             mid_attention: bool = False) -> AutoencoderKL:
    """A 2-level AutoencoderKL (downsamples by 2). Mid-block attention is off: on CPU it costs
    several times the rest of the network at these sizes."""
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=latent_channels, block_out_channels=list(channels),
        layers_per_block=1, down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2, norm_num_groups=norm_groups, sample_size=16,
        mid_block_add_attention=mid_attention,
    )


def tiny_dit(sample_size: int = 8, num_classes: int = 1000, layers: int = 2, heads: int = 2,
             head_dim: int = 16, learned_sigma: bool = False) -> DiTTransformer2DModel:
    """A DiT of ``layers`` blocks on (4, sample_size, sample_size) latents."""
    return DiTTransformer2DModel(
        num_attention_heads=heads, attention_head_dim=head_dim, in_channels=4,
        out_channels=8 if learned_sigma else 4, num_layers=layers, sample_size=sample_size, patch_size=2,
        num_embeds_ada_norm=num_classes,
    )


def ddpm_scheduler() -> DDPMScheduler:
    """DiT's training schedule: 1000 linear betas from 1e-4 to 0.02, ε-prediction."""
    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02,
                         clip_sample=False)


def save_dit_pipeline(path: str | Path, transformer: DiTTransformer2DModel, vae: AutoencoderKL,
                      id2label: dict[int, str] | None = None) -> Path:
    """Write a diffusers DiT folder (safetensors) with an optional ``id2label`` in model_index.json."""
    path = Path(path)
    DiTPipeline(transformer=transformer, vae=vae, scheduler=ddpm_scheduler()).save_pretrained(
        path, safe_serialization=True)
    if id2label:
        index_file = path / "model_index.json"
        index = json.loads(index_file.read_text())
        index["id2label"] = {str(k): v for k, v in id2label.items()}
        index_file.write_text(json.dumps(index, indent=2))
    return path


def build_tiny_dit_pipeline(path: str | Path, *, seed: int = 0, num_classes: int = 1000,
                            resolution: int = 16, learned_sigma: bool = False,
                            id2label: dict[int, str] | None = None) -> Path:
    """Random tiny DiT pipeline for ``resolution`` px images (latents are resolution/2)."""
    torch.manual_seed(seed)
    return save_dit_pipeline(path, tiny_dit(sample_size=resolution // 2, num_classes=num_classes,
                                            learned_sigma=learned_sigma), tiny_vae(), id2label)


#################################################################################
#                       Stable Diffusion and ControlNet                         #
#################################################################################


def tiny_tokenizer(folder: str | Path, max_length: int = 16):
    """A byte-level CLIP tokenizer written offline: printable ASCII and their ``</w>`` forms."""
    from transformers import CLIPTokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    chars = [chr(c) for c in range(33, 127)]
    tokens = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(tokens)}))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=max_length)


def tiny_text_encoder(vocab_size: int = 190, hidden: int = 32, max_length: int = 16):
    """A 2-layer CLIP text encoder (hidden size = the tiny UNet's cross-attention dim)."""
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=64,
                                        num_hidden_layers=2, num_attention_heads=2,
                                        max_position_embeddings=max_length, bos_token_id=188, eos_token_id=189,
                                        pad_token_id=189))


def tiny_unet(sample_size: int = 8, cross_attention_dim: int = 32):
    """A 2-level UNet2DConditionModel (one cross-attention level)."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(sample_size=sample_size, block_out_channels=(32, 64), layers_per_block=1,
                                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
                                cross_attention_dim=cross_attention_dim, attention_head_dim=8, norm_num_groups=32)


def sd_scheduler() -> DDPMScheduler:
    """SD's training schedule: scaled-linear betas 0.00085..0.012, ε-prediction."""
    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085,
                         beta_end=0.012, clip_sample=False, steps_offset=1)


def build_tiny_sd_pipeline(path: str | Path, *, seed: int = 0, resolution: int = 16,
                           controlnet: bool = False) -> Path:
    """Random tiny SD pipeline folder (``StableDiffusionPipeline.from_pretrained`` loads it); with
    ``controlnet`` also a ControlNet initialised from the UNet (``controlnet/``)."""
    import tempfile

    from diffusers import ControlNetModel, StableDiffusionControlNetPipeline, StableDiffusionPipeline

    path = Path(path)
    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = tiny_tokenizer(tmp)
    parts = dict(vae=tiny_vae(), text_encoder=tiny_text_encoder(), tokenizer=tokenizer,
                 unet=tiny_unet(sample_size=resolution // 2), scheduler=sd_scheduler(), safety_checker=None,
                 feature_extractor=None, requires_safety_checker=False)
    if controlnet:
        net = ControlNetModel.from_unet(parts["unet"], conditioning_embedding_out_channels=(16, 32))
        StableDiffusionControlNetPipeline(controlnet=net, **parts).save_pretrained(path, safe_serialization=True)
    else:
        StableDiffusionPipeline(**parts).save_pretrained(path, safe_serialization=True)
    return path


#################################################################################
#                        Stable Diffusion 3 (flow matching)                     #
#################################################################################


def tiny_clip_with_projection(projection_dim: int = 32, hidden: int = 32, max_length: int = 16):
    """A 2-layer CLIP text encoder with a text projection (SD3's CLIP-L and CLIP-G, in miniature)."""
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    return CLIPTextModelWithProjection(CLIPTextConfig(
        vocab_size=190, hidden_size=hidden, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        max_position_embeddings=max_length, projection_dim=projection_dim, bos_token_id=188, eos_token_id=189,
        pad_token_id=189))


def tiny_t5_tokenizer(max_length: int = 16):
    """A character-level T5 tokenizer built offline with the ``tokenizers`` library (Unigram over
    printable ASCII, SentencePiece-style word starts, T5's special tokens)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import T5TokenizerFast

    specials = ["<pad>", "</s>", "<unk>"]
    pieces = [(tok, 0.0) for tok in specials] + [(chr(c), -1.0) for c in range(33, 127)] + [("\u2581", -1.0)]
    core = Tokenizer(models.Unigram(pieces, unk_id=2))
    core.pre_tokenizer = pre_tokenizers.Metaspace()
    core.decoder = decoders.Metaspace()
    return T5TokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                           model_max_length=max_length, extra_ids=0)


def tiny_t5_encoder(vocab_size: int = 98, d_model: int = 64):
    """A 2-layer T5 encoder whose width is the MMDiT's joint attention dimension."""
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(T5Config(vocab_size=vocab_size, d_model=d_model, d_kv=8, d_ff=64, num_layers=2,
                                   num_heads=2, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0))


def tiny_sd3_transformer(sample_size: int = 8, joint_attention_dim: int = 64, pooled_projection_dim: int = 64):
    """A 2-block MMDiT on (4, sample_size, sample_size) latents."""
    from diffusers import SD3Transformer2DModel

    return SD3Transformer2DModel(sample_size=sample_size, patch_size=2, in_channels=4, out_channels=4,
                                 num_layers=2, attention_head_dim=8, num_attention_heads=2,
                                 joint_attention_dim=joint_attention_dim, caption_projection_dim=16,
                                 pooled_projection_dim=pooled_projection_dim, pos_embed_max_size=16)


def build_tiny_sd3_pipeline(path: str | Path, *, seed: int = 0, resolution: int = 16) -> Path:
    """Random tiny SD3 pipeline folder (``StableDiffusion3Pipeline.from_pretrained`` loads it): two
    CLIP encoders with projections, a T5 encoder, an MMDiT, a VAE with SD3's shift factor and the
    flow-matching Euler scheduler."""
    import tempfile

    from diffusers import FlowMatchEulerDiscreteScheduler, StableDiffusion3Pipeline

    path = Path(path)
    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer, tokenizer_2 = tiny_tokenizer(Path(tmp) / "1"), tiny_tokenizer(Path(tmp) / "2")
    vae = tiny_vae()
    vae.register_to_config(shift_factor=0.0, scaling_factor=1.0)
    pipe = StableDiffusion3Pipeline(
        transformer=tiny_sd3_transformer(sample_size=resolution // 2), scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=vae, text_encoder=tiny_clip_with_projection(), tokenizer=tokenizer,
        text_encoder_2=tiny_clip_with_projection(), tokenizer_2=tokenizer_2, text_encoder_3=tiny_t5_encoder(),
        tokenizer_3=tiny_t5_tokenizer())
    pipe.save_pretrained(path, safe_serialization=True)
    return path


#################################################################################
#                                Stable Diffusion XL                            #
#################################################################################


def tiny_sdxl_unet(sample_size: int = 8, cross_attention_dim: int = 64, pooled_dim: int = 32,
                   time_embed_dim: int = 8):
    """A 2-level UNet2DConditionModel with SDXL's ``text_time`` added conditioning (pooled text
    embedding + six size/crop ids)."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(sample_size=sample_size, block_out_channels=(32, 64), layers_per_block=1,
                                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
                                cross_attention_dim=cross_attention_dim, attention_head_dim=8, norm_num_groups=32,
                                use_linear_projection=True, addition_embed_type="text_time",
                                addition_time_embed_dim=time_embed_dim,
                                projection_class_embeddings_input_dim=6 * time_embed_dim + pooled_dim)


def sdxl_scheduler():
    """SDXL's sampler: Euler over scaled-linear betas 0.00085..0.012, ε-prediction, leading spacing."""
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085,
                                  beta_end=0.012, prediction_type="epsilon", timestep_spacing="leading",
                                  steps_offset=1)


def build_tiny_sdxl_pipeline(path: str | Path, *, seed: int = 0, resolution: int = 16,
                             controlnet: bool = False) -> Path:
    """Random tiny SDXL pipeline folder (``StableDiffusionXLPipeline.from_pretrained`` loads it): a CLIP
    encoder and a CLIP encoder with projection (hidden 32 each, so cross-attention 64), a UNet with
    ``text_time`` conditioning and SDXL's Euler scheduler; with ``controlnet`` also a ControlNet
    initialised from the UNet (``controlnet/``, a ``StableDiffusionXLControlNetPipeline`` folder)."""
    import tempfile

    from diffusers import ControlNetModel, StableDiffusionXLControlNetPipeline, StableDiffusionXLPipeline

    path = Path(path)
    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer, tokenizer_2 = tiny_tokenizer(Path(tmp) / "1"), tiny_tokenizer(Path(tmp) / "2")
    text_encoder, text_encoder_2 = tiny_text_encoder(hidden=32), tiny_clip_with_projection(projection_dim=32)
    unet = tiny_sdxl_unet(sample_size=resolution // 2,
                          cross_attention_dim=text_encoder.config.hidden_size + text_encoder_2.config.hidden_size,
                          pooled_dim=text_encoder_2.config.projection_dim)
    parts = dict(vae=tiny_vae(), text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=tokenizer,
                 tokenizer_2=tokenizer_2, unet=unet, scheduler=sdxl_scheduler(), force_zeros_for_empty_prompt=True,
                 add_watermarker=False)
    if controlnet:
        net = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 32))
        StableDiffusionXLControlNetPipeline(controlnet=net, **parts).save_pretrained(path, safe_serialization=True)
    else:
        StableDiffusionXLPipeline(**parts).save_pretrained(path, safe_serialization=True)
    return path


#################################################################################
#                                 Flux (flow matching)                          #
#################################################################################


def tiny_flux_transformer(joint_attention_dim: int = 64, pooled_projection_dim: int = 32):
    """A Flux transformer of one double- and one single-stream block on 2×2-packed 4-channel latents."""
    from diffusers import FluxTransformer2DModel

    return FluxTransformer2DModel(patch_size=1, in_channels=16, num_layers=1, num_single_layers=1,
                                  attention_head_dim=8, num_attention_heads=2,
                                  joint_attention_dim=joint_attention_dim, pooled_projection_dim=pooled_projection_dim,
                                  guidance_embeds=True, axes_dims_rope=(2, 2, 4))


def flux_scheduler():
    """Flux.1-dev's sampler: flow-matching Euler with resolution-dependent (dynamic) shift."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True,
                                           base_shift=0.5, max_shift=1.15, base_image_seq_len=256,
                                           max_image_seq_len=4096)


def build_tiny_flux_pipeline(path: str | Path, *, seed: int = 0, resolution: int = 16) -> Path:
    """Random tiny Flux pipeline folder (``FluxPipeline.from_pretrained`` loads it): a CLIP encoder
    (pooled, hidden 32), a T5 encoder (d_model 64), a guidance-distilled Flux transformer, a VAE with
    shift/scaling factors and Flux.1-dev's scheduler. ``resolution`` is unused by the (size-free)
    transformer and kept for a uniform builder signature."""
    import tempfile

    from diffusers import FluxPipeline

    path = Path(path)
    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = tiny_tokenizer(tmp)
    text_encoder, text_encoder_2 = tiny_text_encoder(hidden=32), tiny_t5_encoder()
    vae = tiny_vae()
    vae.register_to_config(shift_factor=0.0, scaling_factor=1.0)
    transformer = tiny_flux_transformer(joint_attention_dim=text_encoder_2.config.d_model,
                                        pooled_projection_dim=text_encoder.config.hidden_size)
    pipe = FluxPipeline(scheduler=flux_scheduler(), vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                        text_encoder_2=text_encoder_2, tokenizer_2=tiny_t5_tokenizer(), transformer=transformer)
    pipe.save_pretrained(path, safe_serialization=True)
    return path
