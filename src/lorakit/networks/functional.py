"""Weight deltas from saved factors: the math every client (A1111, ComfyUI, LyCORIS) agrees on.

Pure functions of tensors, no modules and no state, so that training, merging, `inspect` and the
tests all compute a delta the same way. Shapes follow the files: a Linear delta is [out, in], a
Conv2d delta [out, in, kh, kw]. Each function returns the *unscaled* product; the scale rules
(alpha / rank, and when it is 1) are in `lora_scale`, `loha_scale`, `lokr_scale`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def lora_delta(
    up: torch.Tensor, down: torch.Tensor, mid: torch.Tensor | None = None, shape: Sequence[int] | None = None
) -> torch.Tensor:
    """up @ down, for Linear ([out,r] @ [r,in]) and Conv2d (down [r,in,kh,kw], up [out,r,1,1]).

    With `mid` (LoCon Tucker: down and up 1x1, mid [r,r,kh,kw]) the kernel lives in `mid`.
    A 3x3 conv LoRA is down-conv then 1x1 up-conv; composing them is a matrix product over the
    rank axis with the kernel carried along, which is what the flatten below computes.
    """
    out_dim, rank = up.shape[0], up.shape[1]
    if mid is not None:
        delta = torch.einsum(
            "m n h w, o m, n i -> o i h w", mid, up.reshape(out_dim, rank), down.reshape(down.shape[0], -1)
        )
    else:
        delta = up.reshape(out_dim, rank) @ down.reshape(down.shape[0], -1)
        if shape is None and down.dim() == 4:
            delta = delta.reshape(out_dim, *down.shape[1:])
    return delta.reshape(shape) if shape is not None else delta


def loha_delta(
    w1a: torch.Tensor,
    w1b: torch.Tensor,
    w2a: torch.Tensor,
    w2b: torch.Tensor,
    t1: torch.Tensor | None = None,
    t2: torch.Tensor | None = None,
    shape: Sequence[int] | None = None,
) -> torch.Tensor:
    """(w1a @ w1b) * (w2a @ w2b): the Hadamard product of two low-rank matrices (rank up to r²).

    Tucker form (LyCORIS `use_tucker` on convs): w*a [r,out], w*b [r,in], t* [r,r,kh,kw].
    """
    if t1 is not None and t2 is not None:
        m1 = torch.einsum("i j h w, j r, i p -> p r h w", t1, w1b, w1a)
        m2 = torch.einsum("i j h w, j r, i p -> p r h w", t2, w2b, w2a)
    else:
        m1 = w1a @ w1b
        m2 = w2a @ w2b
    delta = m1 * m2
    return delta.reshape(shape) if shape is not None else delta


def lokr_delta(
    w1: torch.Tensor | None = None,
    w1a: torch.Tensor | None = None,
    w1b: torch.Tensor | None = None,
    w2: torch.Tensor | None = None,
    w2a: torch.Tensor | None = None,
    w2b: torch.Tensor | None = None,
    t2: torch.Tensor | None = None,
    shape: Sequence[int] | None = None,
) -> torch.Tensor:
    """kron(W1, W2), each factor stored full (`lokr_w1`) or as a low-rank pair (`lokr_w1_a/_b`).

    W1 is [a, c], W2 [b, d(·kh·kw)] with out = a·b and in = c·d. A conv kernel rides on W2
    (flattened into its columns, or rebuilt from `lokr_t2` in the Tucker form).
    """
    if w1 is None:
        if w1a is None or w1b is None:
            raise ValueError("LoKr needs lokr_w1 or both lokr_w1_a and lokr_w1_b")
        w1 = w1a @ w1b
    if w2 is None:
        if w2a is None or w2b is None:
            raise ValueError("LoKr needs lokr_w2 or both lokr_w2_a and lokr_w2_b")
        w2 = torch.einsum("i j h w, j r, i p -> p r h w", t2, w2b, w2a) if t2 is not None else w2a @ w2b
    w1 = w1.reshape(w1.shape[0], -1)
    delta = torch.kron(w1, w2.reshape(w2.shape[0], -1))
    return delta.reshape(shape) if shape is not None else delta


def lora_scale(alpha: float | None, down: torch.Tensor) -> float:
    """alpha / rank, rank = lora_down.shape[0]; a file without alpha means scale 1 (clients agree)."""
    return 1.0 if alpha is None else float(alpha) / down.shape[0]


def loha_scale(alpha: float | None, w1b: torch.Tensor) -> float:
    return 1.0 if alpha is None else float(alpha) / w1b.shape[0]


def lokr_scale(alpha: float | None, w1b: torch.Tensor | None, w2b: torch.Tensor | None) -> float:
    """alpha / r only when a factor is decomposed (r from that pair, W2's if both); else 1.

    When both factors are full there is no rank, and every client ignores alpha.
    """
    rank_from = w2b if w2b is not None else w1b
    if alpha is None or rank_from is None:
        return 1.0
    return float(alpha) / rank_from.shape[0]


def factorization(dimension: int, factor: int = -1) -> tuple[int, int]:
    """Split `dimension` into (m, n), m <= n, m·n = dimension, m as close to `factor` as divides.

    factor = -1 gives the most balanced split (1024 -> 32, 32); this is LyCORIS' rule, so a
    `factor=8` LoKr has the shapes users expect from LyCORIS (e.g. 320 -> 8, 40).
    """
    if factor > 0 and dimension % factor == 0:
        m, n = factor, dimension // factor
        return (m, n) if m <= n else (n, m)
    if factor < 0:
        factor = dimension
    m, n = 1, dimension
    while m < n:
        new_m = m + 1
        while dimension % new_m != 0:
            new_m += 1
        new_n = dimension // new_m
        if new_m + new_n > m + n or new_m > factor:
            break
        m, n = new_m, new_n
    return (m, n) if m <= n else (n, m)


def dora_on_output(dora_scale: torch.Tensor, weight_shape: Sequence[int]) -> bool:
    """Whether a magnitude vector holds one norm per output row (LyCORIS `wd_on_out`, PEFT) or
    one per input column (early LyCORIS, what A1111 computes); told apart by its shape."""
    if dora_scale.dim() <= 1:
        return dora_scale.numel() == weight_shape[0]
    return dora_scale.shape[0] == weight_shape[0] and dora_scale.shape[1] == 1


def weight_norm(weight: torch.Tensor, on_output: bool) -> torch.Tensor:
    """Per-row (on_output) or per-column L2 norms, shaped to broadcast against `weight`."""
    ones = [1] * (weight.dim() - 1)
    if on_output:
        return weight.reshape(weight.shape[0], -1).norm(dim=1).reshape(weight.shape[0], *ones)
    cols = weight.transpose(0, 1).reshape(weight.shape[1], -1).norm(dim=1)
    return cols.reshape(weight.shape[1], *ones).transpose(0, 1)


def dora_weight(weight: torch.Tensor, delta: torch.Tensor, dora_scale: torch.Tensor) -> torch.Tensor:
    """DoRA: W' = m · (W + ΔW) / ‖W + ΔW‖, the direction from the LoRA, the magnitude learned."""
    merged = weight + delta
    on_output = dora_on_output(dora_scale, weight.shape)
    norm = weight_norm(merged, on_output) + torch.finfo(merged.dtype).eps
    magnitude = dora_scale.reshape(norm.shape).to(merged.dtype)
    return merged * (magnitude / norm)


def dora_magnitude(weight: torch.Tensor, on_output: bool = True) -> torch.Tensor:
    """The initial `dora_scale` (‖W‖), stored as LyCORIS does: [out,1,...] or [1,in,...]."""
    return weight_norm(weight.float(), on_output)
