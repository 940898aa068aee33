"""Tiny random-weight Stable Diffusion, SD3 and FLUX pipelines, built from their diffusers and
transformers configs and written with ``save_pretrained`` — the real loading path with no
download.  Shapes follow diffusers' own pipeline tests (a few thousand parameters each); the
VAEs have a non-trivial ``shift_factor`` where the family has one."""
from __future__ import annotations

import json
import string
import tempfile
from pathlib import Path

import torch

IMAGE_SIZE = 32  # 2× VAE → 16×16 latents (FLUX: 8×8 packed tokens)
CHARS = string.ascii_lowercase


def clip_tokenizer():
    """A character-level CLIP BPE tokenizer (no merges) with CLIP's special tokens."""
    from transformers import CLIPTokenizer

    folder = Path(tempfile.mkdtemp())
    vocab = {"<|startoftext|>": 0, "!": 1, "<|endoftext|>": 2}
    vocab.update({c: len(vocab) + i for i, c in enumerate(CHARS)})
    vocab.update({c + "</w>": len(vocab) + i for i, c in enumerate(CHARS)})
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77, pad_token="!")


def t5_tokenizer():
    """A character-level unigram T5 tokenizer (pad 0, eos 1, unk 2, as T5's)."""
    from transformers import T5TokenizerFast

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -3.0)]
    pieces += [("▁" + c, -1.0) for c in CHARS] + [(c, -2.0) for c in CHARS]
    return T5TokenizerFast(vocab=pieces, extra_ids=0, model_max_length=512)


def clip_text_model(projection: bool, hidden: int = 32):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cfg = CLIPTextConfig(bos_token_id=0, eos_token_id=2, pad_token_id=1, hidden_size=hidden, intermediate_size=37,
                         num_attention_heads=4, num_hidden_layers=2, vocab_size=3 + 2 * len(CHARS),
                         projection_dim=hidden, hidden_act="gelu")
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(cfg)


def t5_model(d_model: int = 32):
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(T5Config(vocab_size=3 + 1 + 2 * len(CHARS), d_model=d_model, d_kv=8, d_ff=37, num_layers=2,
                                   num_heads=2, relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1,
                                   decoder_start_token_id=0))


def vae(latent_channels: int, scaling_factor: float, shift_factor: float | None, quant_conv: bool = True):
    from diffusers import AutoencoderKL

    return AutoencoderKL(in_channels=3, out_channels=3, block_out_channels=(8, 16), layers_per_block=1,
                         down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                         latent_channels=latent_channels, norm_num_groups=4, sample_size=IMAGE_SIZE,
                         scaling_factor=scaling_factor, shift_factor=shift_factor,
                         use_quant_conv=quant_conv, use_post_quant_conv=quant_conv)


def make_sd(folder: Path, prediction_type: str = "epsilon") -> Path:
    """Stable Diffusion 1.x (``epsilon``) or 2.x (``v_prediction``) layout."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=IMAGE_SIZE // 2, in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=(8, 16), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
                                norm_num_groups=4, attention_head_dim=4)
    sched = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                          set_alpha_to_one=False, steps_offset=1, prediction_type=prediction_type)
    pipe = StableDiffusionPipeline(vae=vae(4, 0.18215, None), text_encoder=clip_text_model(False),
                                   tokenizer=clip_tokenizer(), unet=unet, scheduler=sched,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(folder)
    return folder


def make_sd3(folder: Path, with_t5: bool = True) -> Path:
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    torch.manual_seed(0)
    transformer = SD3Transformer2DModel(sample_size=IMAGE_SIZE // 2, patch_size=2, in_channels=4, num_layers=1,
                                        attention_head_dim=8, num_attention_heads=4, caption_projection_dim=32,
                                        joint_attention_dim=64, pooled_projection_dim=64, out_channels=4,
                                        pos_embed_max_size=16)
    tok = clip_tokenizer()
    pipe = StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=vae(4, 1.5305, 0.0609, quant_conv=False), text_encoder=clip_text_model(True), tokenizer=tok,
        text_encoder_2=clip_text_model(True), tokenizer_2=tok,
        text_encoder_3=t5_model(64) if with_t5 else None, tokenizer_3=t5_tokenizer() if with_t5 else None)
    pipe.save_pretrained(folder)
    return folder


def make_flux(folder: Path, guidance_embeds: bool = True) -> Path:
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(patch_size=1, in_channels=16, num_layers=1, num_single_layers=1,
                                         attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
                                         pooled_projection_dim=32, axes_dims_rope=(4, 4, 8),
                                         guidance_embeds=guidance_embeds)
    sched = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                            base_image_seq_len=256, max_image_seq_len=4096)
    pipe = FluxPipeline(transformer=transformer, scheduler=sched, vae=vae(4, 0.3611, 0.1159, quant_conv=False),
                        text_encoder=clip_text_model(False), tokenizer=clip_tokenizer(),
                        text_encoder_2=t5_model(32), tokenizer_2=t5_tokenizer())
    pipe.save_pretrained(folder)
    return folder
