"""Random-weight SD1 / SD2 / SDXL models built with the real classes, tiny or full size.

Tests write them as single-file checkpoints in the real A1111 layout and load them back through
the same code as a downloaded checkpoint. The tiny sizes follow the rules the loader reads off
shapes (SD1: 8 attention heads; SD2/SDXL/CLIP: heads of width 64, at least one).
"""

from __future__ import annotations

from pathlib import Path

import torch
from accelerate import init_empty_weights
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from .families import FAMILIES, SD1, SD2, Family
from .model import StableDiffusionModel
from .save import save_single_file
from .tokenizers import clip_tokenizer

TINY_RESOLUTION = 64


def tiny_configs(family: Family) -> dict[str, dict]:
    width = 32
    text = dict(hidden_size=width, intermediate_size=64, num_attention_heads=1, num_hidden_layers=2)
    unet = dict(
        block_out_channels=[32, 64],
        layers_per_block=1,
        sample_size=TINY_RESOLUTION // 2,
        cross_attention_dim=width,
        attention_head_dim=8 if family == SD1 else [1, 1],
        down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"],
        up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"],
    )
    configs = {
        "vae": dict(
            block_out_channels=[32, 64],
            down_block_types=["DownEncoderBlock2D"] * 2,
            up_block_types=["UpDecoderBlock2D"] * 2,
            layers_per_block=1,
            sample_size=TINY_RESOLUTION,
        ),
        "text_encoder": dict(text),
        "unet": unet,
    }
    if family.is_xl:
        configs["text_encoder_2"] = dict(text, projection_dim=width)
        time_dim = 8
        unet.update(
            cross_attention_dim=2 * width,
            down_block_types=["DownBlock2D", "CrossAttnDownBlock2D"],
            up_block_types=["CrossAttnUpBlock2D", "UpBlock2D"],
            transformer_layers_per_block=[1, 2],
            addition_time_embed_dim=time_dim,
            projection_class_embeddings_input_dim=width + 6 * time_dim,
        )
    return configs


def random_model(
    family: str = "sd1",
    prediction_type: str = "epsilon",
    size: str = "tiny",
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> StableDiffusionModel:
    """A model with random weights. size: "tiny" (seconds, a few MB) or "full" (real sizes, GBs)."""
    fam = FAMILIES[family]
    overrides = tiny_configs(fam) if size == "tiny" else {}
    torch.manual_seed(seed)

    def config(name: str) -> dict:
        return {**fam.config(name), **overrides.get(name, {})}

    def build(factory):
        if size == "tiny":
            return factory()
        # full size: skip the slow initialisers; N(0, 0.02) weights made directly in `dtype`
        with init_empty_weights(include_buffers=False):
            module = factory()
        state = {k: torch.randn(v.shape, dtype=dtype) * 0.02 for k, v in module.state_dict().items()}
        module.load_state_dict(state, assign=True)
        return module

    unet = build(lambda: UNet2DConditionModel.from_config(config("unet")))
    vae = build(lambda: AutoencoderKL.from_config(config("vae")))
    encoders = [build(lambda: CLIPTextModel(CLIPTextConfig(**config("text_encoder"))))]
    if fam.is_xl:
        encoders.append(
            build(lambda: CLIPTextModelWithProjection(CLIPTextConfig(**config("text_encoder_2"))))
        )
    modules = [unet, vae, *encoders]
    if size == "tiny":  # make every tensor distinct, so a swapped pair of weights shows in tests
        with torch.no_grad():
            for module in modules:
                for p in module.parameters():
                    p.add_(torch.randn_like(p) * 0.02)
    for module in modules:
        if size == "tiny" and dtype != torch.float32:
            module.to(dtype)
        module.eval().requires_grad_(False)
    resolution = (
        TINY_RESOLUTION
        if size == "tiny"
        else (768 if fam == SD2 and prediction_type == "v_prediction" else fam.resolution)
    )
    return StableDiffusionModel(
        family=fam,
        unet=unet,
        vae=vae,
        text_encoders=encoders,
        tokenizers=[clip_tokenizer(oc) for oc in fam.open_clip],
        prediction_type=prediction_type,
        prediction_source="file",
        resolution=resolution,
        source=f"random {size} {family}",
    )


def write_checkpoint(
    path: str | Path,
    family: str = "sd1",
    prediction_type: str = "epsilon",
    size: str = "tiny",
    seed: int = 0,
    precision: str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Path:
    """Write a random model as a single-file `.safetensors` checkpoint in the A1111 layout."""
    model = random_model(family, prediction_type, size, seed, dtype)
    return save_single_file(model, path, precision=precision)
