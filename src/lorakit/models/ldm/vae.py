"""VAE: diffusers `AutoencoderKL` names <-> original LDM names (`first_stage_model.*`).

Two differences beyond renaming: the decoder's levels are numbered in reverse in the original,
and the mid-block attention uses 1×1 convolutions there where diffusers uses Linear layers.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from .common import SAME, SQUEEZE, KeyMap, Op, build_map, replace_prefix

_ATTENTION = [
    ("group_norm.", "norm."),
    ("to_q.", "q."),
    ("to_k.", "k."),
    ("to_v.", "v."),
    ("to_out.0.", "proj_out."),
]

_DOWN = re.compile(r"encoder\.down_blocks\.(\d+)\.(resnets\.(\d+)|downsamplers\.0)\.(.*)")
_UP = re.compile(r"decoder\.up_blocks\.(\d+)\.(resnets\.(\d+)|upsamplers\.0)\.(.*)")
_MID = re.compile(r"(encoder|decoder)\.mid_block\.(resnets|attentions)\.(\d+)\.(.*)")


def _resnet(rest: str) -> str:
    return replace_prefix(rest, [("conv_shortcut.", "nin_shortcut.")]) or rest


def ldm_name(key: str, config: Mapping[str, Any]) -> tuple[str, Op]:
    if m := _DOWN.fullmatch(key):
        level, j, rest = m[1], m[3], m[4]
        if j is None:
            return f"encoder.down.{level}.downsample.{rest}", SAME
        return f"encoder.down.{level}.block.{j}.{_resnet(rest)}", SAME

    if m := _UP.fullmatch(key):
        level = len(config["up_block_types"]) - 1 - int(m[1])
        j, rest = m[3], m[4]
        if j is None:
            return f"decoder.up.{level}.upsample.{rest}", SAME
        return f"decoder.up.{level}.block.{j}.{_resnet(rest)}", SAME

    if m := _MID.fullmatch(key):
        side, kind, j, rest = m[1], m[2], int(m[3]), m[4]
        if kind == "resnets":
            return f"{side}.mid.block_{j + 1}.{_resnet(rest)}", SAME
        renamed = replace_prefix(rest, _ATTENTION)
        if renamed is None:
            raise KeyError(f"no original name known for VAE key {key!r}")
        op = SQUEEZE if renamed.endswith("weight") and not renamed.startswith("norm.") else SAME
        return f"{side}.mid.attn_1.{renamed}", op

    for side in ("encoder", "decoder"):
        if key.startswith(f"{side}.conv_norm_out."):
            return key.replace("conv_norm_out.", "norm_out.", 1), SAME
    return key, SAME  # conv_in, conv_out, quant_conv, post_quant_conv keep their names


def key_map(diffusers_keys: Iterable[str], config: Mapping[str, Any]) -> KeyMap:
    return build_map(diffusers_keys, lambda key: ldm_name(key, config))
