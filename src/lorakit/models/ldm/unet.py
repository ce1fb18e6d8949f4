"""U-Net: diffusers `UNet2DConditionModel` names <-> original LDM/SGM names.

The original U-Net numbers its blocks flat (`input_blocks.N`, `middle_block.N`,
`output_blocks.N`); diffusers nests them (`down_blocks.i.resnets.j`). The flat index follows
from `layers_per_block`: each down level holds its resnets then one downsampler, each up level
holds one more resnet than a down level, with the upsampler placed after the attention if the
level has one. SDXL LoRA keys in sd-scripts use these flat (SGM) names too, which is why this
function is public.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from .common import SAME, KeyMap, Op, build_map, replace_prefix

_RESNET = [
    ("norm1.", "in_layers.0."),
    ("conv1.", "in_layers.2."),
    ("time_emb_proj.", "emb_layers.1."),
    ("norm2.", "out_layers.0."),
    ("conv2.", "out_layers.3."),
    ("conv_shortcut.", "skip_connection."),
]

_TOP = [
    ("conv_in.", "input_blocks.0.0."),
    ("time_embedding.linear_1.", "time_embed.0."),
    ("time_embedding.linear_2.", "time_embed.2."),
    ("add_embedding.linear_1.", "label_emb.0.0."),
    ("add_embedding.linear_2.", "label_emb.0.2."),
    ("conv_norm_out.", "out.0."),
    ("conv_out.", "out.2."),
]

_DOWN = re.compile(r"down_blocks\.(\d+)\.(resnets|attentions|downsamplers)\.(\d+)\.(.*)")
_UP = re.compile(r"up_blocks\.(\d+)\.(resnets|attentions|upsamplers)\.(\d+)\.(.*)")
_MID = re.compile(r"mid_block\.(resnets|attentions)\.(\d+)\.(.*)")


def _layers(config: Mapping[str, Any], level: int) -> int:
    layers = config["layers_per_block"]
    return layers[level] if isinstance(layers, (list, tuple)) else layers


def _resnet(rest: str) -> str:
    return replace_prefix(rest, _RESNET) or rest


def ldm_name(key: str, config: Mapping[str, Any]) -> str:
    """The original name of a diffusers U-Net key (without `model.diffusion_model.`)."""
    top = replace_prefix(key, _TOP)
    if top is not None:
        return top

    if m := _DOWN.fullmatch(key):
        level, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        first = 1 + sum(_layers(config, i) + 1 for i in range(level))
        if kind == "resnets":
            return f"input_blocks.{first + j}.0.{_resnet(rest)}"
        if kind == "attentions":
            return f"input_blocks.{first + j}.1.{rest}"
        # downsamplers.0.conv.* -> input_blocks.K.0.op.*
        return f"input_blocks.{first + _layers(config, level)}.0.op.{rest.removeprefix('conv.')}"

    if m := _MID.fullmatch(key):
        kind, j, rest = m[1], int(m[2]), m[3]
        if kind == "attentions":
            return f"middle_block.1.{rest}"
        return f"middle_block.{2 * j}.{_resnet(rest)}"

    if m := _UP.fullmatch(key):
        level, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        n_levels = len(config["up_block_types"])
        # up level `level` mirrors down level n-1-level and has one resnet more
        per_level = [_layers(config, n_levels - 1 - i) + 1 for i in range(n_levels)]
        first = sum(per_level[:level])
        if kind == "resnets":
            return f"output_blocks.{first + j}.0.{_resnet(rest)}"
        if kind == "attentions":
            return f"output_blocks.{first + j}.1.{rest}"
        has_attention = "CrossAttn" in config["up_block_types"][level]
        slot = 2 if has_attention else 1
        return f"output_blocks.{first + per_level[level] - 1}.{slot}.{rest}"

    raise KeyError(f"no original name known for U-Net key {key!r}")


def key_map(diffusers_keys: Iterable[str], config: Mapping[str, Any]) -> KeyMap:
    def rename(key: str) -> tuple[str, Op]:
        return ldm_name(key, config), SAME

    return build_map(diffusers_keys, rename)
