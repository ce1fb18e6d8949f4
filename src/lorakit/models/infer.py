"""diffusers/transformers configs read off a single-file checkpoint's tensor shapes.

A checkpoint carries no config. The family's shipped config gives the fixed choices (activation,
norms, embeddings); the sizes (channels, levels, layers, attention depth, context width) come from
the shapes, so fine-tunes, pruned files and the tiny test models load through the same code.
Attention heads cannot be seen in shapes: SD1 uses 8 heads, SD2/SDXL and CLIP use heads of width
64 (at least one head for the tiny models).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from .families import SD1, Family

Shape = Callable[[str], tuple[int, ...]]


def _indices(keys, pattern: str) -> list[int]:
    rx = re.compile(pattern)
    return sorted({int(m[1]) for k in keys if (m := rx.match(k))})


def _heads(width: int) -> int:
    return max(1, width // 64)


def unet_config(family: Family, keys: list[str], shape: Shape, pooled_dim: int | None) -> dict[str, Any]:
    """`keys` are U-Net keys with the `model.diffusion_model.` prefix removed."""
    config = family.config("unet")
    blocks = _indices(keys, r"input_blocks\.(\d+)\.")
    channels, has_attention, depth = [], [], []
    level_resnets = 0
    layers = None
    for index in blocks[1:]:
        if f"input_blocks.{index}.0.op.weight" in keys:
            layers = layers or level_resnets
            level_resnets = 0
            continue
        level_resnets += 1
        if level_resnets == 1:
            channels.append(shape(f"input_blocks.{index}.0.out_layers.3.weight")[0])
            has_attention.append(f"input_blocks.{index}.1.proj_in.weight" in keys)
            depth.append(len(_indices(keys, rf"input_blocks\.{index}\.1\.transformer_blocks\.(\d+)\.")))
    layers = layers or level_resnets

    first_attention = next(k for k in keys if k.endswith("attn2.to_k.weight"))
    proj_in = next(k for k in keys if k.endswith("proj_in.weight"))
    mid_depth = len(_indices(keys, r"middle_block\.1\.transformer_blocks\.(\d+)\."))
    config.update(
        in_channels=shape("input_blocks.0.0.weight")[1],
        out_channels=shape("out.2.weight")[0],
        block_out_channels=channels,
        layers_per_block=layers,
        cross_attention_dim=shape(first_attention)[1],
        use_linear_projection=len(shape(proj_in)) == 2,
        down_block_types=["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in has_attention],
        up_block_types=["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(has_attention)],
    )
    if family == SD1:
        config["attention_head_dim"] = 8
    else:
        config["attention_head_dim"] = [_heads(c) for c in channels]
    if family.is_xl or any(d > 1 for d in depth) or mid_depth > 1:
        # levels without attention keep depth 1 (unused); the mid block uses the last level's depth
        config["transformer_layers_per_block"] = [d or 1 for d in depth[:-1]] + [mid_depth]
    if "label_emb.0.0.weight" in keys:
        proj = shape("label_emb.0.0.weight")[1]
        config["projection_class_embeddings_input_dim"] = proj
        if pooled_dim is not None:
            config["addition_time_embed_dim"] = (proj - pooled_dim) // 6
    return config


def vae_config(family: Family, keys: list[str], shape: Shape) -> dict[str, Any]:
    """`keys` are VAE keys with the `first_stage_model.` prefix removed."""
    config = family.config("vae")
    levels = _indices(keys, r"encoder\.down\.(\d+)\.")
    config.update(
        block_out_channels=[shape(f"encoder.down.{i}.block.0.conv1.weight")[0] for i in levels],
        down_block_types=["DownEncoderBlock2D"] * len(levels),
        up_block_types=["UpDecoderBlock2D"] * len(levels),
        layers_per_block=len(_indices(keys, r"encoder\.down\.0\.block\.(\d+)\.")),
        latent_channels=shape("post_quant_conv.weight")[0],
        in_channels=shape("encoder.conv_in.weight")[1],
        out_channels=shape("decoder.conv_out.weight")[0],
    )
    return config


def _text_config(
    base: dict[str, Any], token_embedding: tuple[int, ...], positions: int, layers: int, intermediate: int
) -> dict[str, Any]:
    """`base` with the sizes of a CLIP text encoder, which both layouts store under their own names."""
    vocab, width = token_embedding
    config = dict(base)
    config.update(
        vocab_size=vocab,
        hidden_size=width,
        num_attention_heads=_heads(width),
        max_position_embeddings=positions,
        num_hidden_layers=layers,
        intermediate_size=intermediate,
    )
    return config


def clip_l_config(base: dict[str, Any], keys: list[str], shape: Shape) -> dict[str, Any]:
    """`keys` are CLIP keys without their file prefix (with or without `text_model.`)."""
    keys = [k.removeprefix("text_model.") for k in keys]
    return _text_config(
        base,
        shape("embeddings.token_embedding.weight"),
        positions=shape("embeddings.position_embedding.weight")[0],
        layers=len(_indices(keys, r"encoder\.layers\.(\d+)\.")),
        intermediate=shape("encoder.layers.0.mlp.fc1.weight")[0],
    )


def open_clip_config(base: dict[str, Any], keys: list[str], shape: Shape, drop_last: bool) -> dict[str, Any]:
    """OpenCLIP layout. SD2 uses the penultimate layer, so its last layer is dropped (`drop_last`),
    as diffusers does; the dropped tensors are kept aside and written back on save."""
    layers = len(_indices(keys, r"transformer\.resblocks\.(\d+)\."))
    config = _text_config(
        base,
        shape("token_embedding.weight"),
        positions=shape("positional_embedding")[0],
        layers=layers - 1 if drop_last else layers,
        intermediate=shape("transformer.resblocks.0.mlp.c_fc.weight")[0],
    )
    if "text_projection" in keys:
        config["projection_dim"] = shape("text_projection")[1]
    return config
