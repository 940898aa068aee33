"""The published configurations of the foundation priors' networks (diffusers vocabulary), for
building them with random weights — the speed and memory scripts measure the real architectures
without downloading weights (``scripts/scale_benchmark.py``, ``scripts/foundation_memory.py``)."""
from __future__ import annotations

# Stable Diffusion 1.5's UNet2DConditionModel (860 M parameters; sample_size 64 = 512 px)
SD15_UNET = dict(sample_size=64, in_channels=4, out_channels=4, block_out_channels=(320, 640, 1280, 1280),
                 layers_per_block=2, cross_attention_dim=768, attention_head_dim=8,
                 down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                 up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
# SD3-medium's SD3Transformer2DModel (2.0 B; sample_size 128 = 1024 px)
SD3_MEDIUM = dict(sample_size=128, patch_size=2, in_channels=16, num_layers=24, attention_head_dim=64,
                  num_attention_heads=24, joint_attention_dim=4096, caption_projection_dim=1536,
                  pooled_projection_dim=2048, out_channels=16, pos_embed_max_size=192)
# FLUX.1-dev's FluxTransformer2DModel (11.9 B)
FLUX_DEV = dict(patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
                num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768, guidance_embeds=True,
                axes_dims_rope=(16, 56, 56))
# the AutoencoderKL of SD 1.x (4 latent channels) and of SD3 / FLUX (16, no quant convs)
VAE_SD = dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
              down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
VAE_16 = dict(VAE_SD, latent_channels=16, use_quant_conv=False, use_post_quant_conv=False)
