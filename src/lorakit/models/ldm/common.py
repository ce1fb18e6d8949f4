"""One key map per component, used in both directions.

A map sends each diffusers key to the original (LDM/SGM, "A1111 layout") key it comes from and
the operation that turns the original tensor into the diffusers one. Loading applies the
operation; saving applies its inverse. Keeping one table for both directions is what makes the
round trip exact by construction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Op:
    """How an original tensor becomes the diffusers tensor.

    kind: "same"; "squeeze" (1×1 conv weight in the original, Linear in diffusers);
    "transpose" (OpenCLIP text_projection is used as x @ W); "chunk" (OpenCLIP fused in_proj
    holds q, k and v stacked on dim 0: part `index` of `parts`).
    """

    kind: str = "same"
    index: int = 0
    parts: int = 1


SAME = Op()
SQUEEZE = Op("squeeze")
TRANSPOSE = Op("transpose")


def chunk(index: int, parts: int = 3) -> Op:
    return Op("chunk", index, parts)


KeyMap = dict[str, tuple[str, Op]]  # diffusers key -> (original key, op)


def to_diffusers(tensor: torch.Tensor, op: Op) -> torch.Tensor:
    if op.kind == "same":
        return tensor
    if op.kind == "squeeze":
        return tensor.reshape(tensor.shape[0], tensor.shape[1])
    if op.kind == "transpose":
        return tensor.t().contiguous()
    if op.kind == "chunk":
        return tensor.chunk(op.parts, dim=0)[op.index].contiguous()
    raise ValueError(f"unknown op {op.kind}")


def to_original(parts: list[torch.Tensor], op: Op) -> torch.Tensor:
    """Inverse of `to_diffusers`; `parts` holds every diffusers tensor that feeds this key, in order."""
    if op.kind == "same":
        return parts[0]
    if op.kind == "squeeze":
        return parts[0].reshape(*parts[0].shape, 1, 1)
    if op.kind == "transpose":
        return parts[0].t().contiguous()
    if op.kind == "chunk":
        return torch.cat(parts, dim=0)
    raise ValueError(f"unknown op {op.kind}")


def build_map(diffusers_keys: Iterable[str], rename: Callable[[str], tuple[str, Op]]) -> KeyMap:
    return {key: rename(key) for key in diffusers_keys}


def original_state_dict(
    state: Mapping[str, torch.Tensor], key_map: KeyMap, prefix: str
) -> dict[str, torch.Tensor]:
    """diffusers state dict -> original keys (with `prefix`), merging chunked tensors."""
    grouped: dict[str, list[tuple[int, torch.Tensor]]] = {}
    ops: dict[str, Op] = {}
    for key, tensor in state.items():
        if key not in key_map:
            continue
        original, op = key_map[key]
        grouped.setdefault(original, []).append((op.index, tensor))
        ops[original] = op
    out = {}
    for original, parts in grouped.items():
        op = ops[original]
        if op.kind == "chunk" and len(parts) != op.parts:
            raise ValueError(f"{original}: expected {op.parts} parts, got {len(parts)}")
        ordered = [t for _, t in sorted(parts, key=lambda p: p[0])]
        out[prefix + original] = to_original(ordered, op)
    return out


def replace_prefix(key: str, rules: list[tuple[str, str]]) -> str | None:
    for old, new in rules:
        if key.startswith(old):
            return new + key[len(old) :]
    return None
