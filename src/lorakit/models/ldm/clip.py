"""Text encoders: transformers CLIP names <-> the two original layouts.

- OpenAI CLIP-L (SD1, SDXL's first encoder) is stored as a transformers `CLIPTextModel` already,
  under `text_model.` (`cond_stage_model.transformer.` / `conditioner.embedders.0.transformer.`).
- OpenCLIP ViT-H (SD2) and ViT-bigG (SDXL's second encoder) are stored in open_clip's own layout
  (`cond_stage_model.model.` / `conditioner.embedders.1.model.`): fused q/k/v `in_proj`, `ln_1`,
  `c_fc`, and a `text_projection` matrix applied as x @ W.

Recent transformers versions drop the `text_model.` prefix from `CLIPTextModel` state dicts, older
ones keep it; `canonical()` strips it so both name the same key.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from .common import SAME, TRANSPOSE, KeyMap, Op, build_map, chunk, replace_prefix


def canonical(key: str) -> str:
    return key.removeprefix("text_model.")


def clip_l_name(key: str) -> tuple[str, Op]:
    return "text_model." + canonical(key), SAME


_LAYER = re.compile(r"encoder\.layers\.(\d+)\.(.*)")
_OPEN_CLIP_LAYER = [
    ("layer_norm1.", "ln_1."),
    ("layer_norm2.", "ln_2."),
    ("mlp.fc1.", "mlp.c_fc."),
    ("mlp.fc2.", "mlp.c_proj."),
    ("self_attn.out_proj.", "attn.out_proj."),
]
_QKV = {"q_proj": 0, "k_proj": 1, "v_proj": 2}


def open_clip_name(key: str) -> tuple[str, Op]:
    key = canonical(key)
    if key == "embeddings.token_embedding.weight":
        return "token_embedding.weight", SAME
    if key == "embeddings.position_embedding.weight":
        return "positional_embedding", SAME
    if key == "text_projection.weight":
        return "text_projection", TRANSPOSE
    if key.startswith("final_layer_norm."):
        return "ln_final." + key.removeprefix("final_layer_norm."), SAME
    if m := _LAYER.fullmatch(key):
        layer, rest = m[1], m[2]
        base = f"transformer.resblocks.{layer}."
        renamed = replace_prefix(rest, _OPEN_CLIP_LAYER)
        if renamed is not None:
            return base + renamed, SAME
        attn = re.fullmatch(r"self_attn\.(q_proj|k_proj|v_proj)\.(weight|bias)", rest)
        if attn:
            return base + f"attn.in_proj_{attn[2]}", chunk(_QKV[attn[1]])
    raise KeyError(f"no original name known for OpenCLIP key {key!r}")


def key_map(diffusers_keys: Iterable[str], open_clip: bool) -> KeyMap:
    return build_map(diffusers_keys, open_clip_name if open_clip else clip_l_name)
