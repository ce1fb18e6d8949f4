"""Low-rank factorisation: the SVD, the rank rules of sd-scripts' resize, quantile clamping.

A LoRA stores ΔW = up @ down. Truncating the SVD of ΔW to rank k gives the best rank-k
approximation in the Frobenius norm (Eckart-Young), so resize, SVD-merge and extract all reduce
to: build the matrix, take its SVD, keep k singular triplets, store up = U_k·S_k, down = V_kᵀ
(sd-scripts' split, so files compare value by value with its tools).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import LorakitError

DYNAMIC_METHODS = ("sv_ratio", "sv_fro", "sv_cumulative")
MIN_SV = 1e-6  # below this the matrix counts as zero and keeps rank 1 (sd-scripts' threshold)
_QUANTILE_LIMIT = 16_000_000  # torch.quantile refuses larger inputs


def resolve_device(device: str | torch.device | None) -> torch.device:
    """ "auto"/None: the GPU when PyTorch sees one, else the CPU."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as e:
        raise LorakitError(
            f"--device {device}: not a device name ({e}); use auto, cpu, cuda or cuda:N."
        ) from e
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise LorakitError(f"--device {device}: PyTorch sees no CUDA GPU here; use --device cpu (or auto).")
    return resolved


def svd(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Thin SVD in float32 (fp16/bf16 SVD is not supported and would lose the small values)."""
    return torch.linalg.svd(matrix.float(), full_matrices=False)


def _orthonormal_basis(tall: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(Q, R) with tall = Q @ R, Q's columns orthonormal, from the r x r Gram matrix's
    eigenvectors in float64 (several times cheaper on a CPU than a QR of the tall matrix;
    float64 keeps the squared condition number harmless at float32 precision). Directions
    of negligible weight are dropped, so Q may have fewer than r columns."""
    gram = tall.t() @ tall
    values, vectors = torch.linalg.eigh(gram)
    keep = values > values.max().clamp(min=0) * 1e-12
    if not bool(keep.any()):
        return tall.new_zeros(tall.shape[0], 1), tall.new_zeros(1, tall.shape[1])
    values, vectors = values[keep], vectors[:, keep]
    root = values.sqrt()
    return (tall @ vectors) / root, root[:, None] * vectors.t()


def svd_of_product(up: torch.Tensor, down: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SVD of up @ down ([out,r] @ [r,in]) without forming it: an orthonormal basis of each
    factor, then the SVD of an r x r core. Exact (to float32), and for an SDXL layer hundreds of
    times less work than the SVD of the full 10240 x 1280 product."""
    rank = up.shape[1]
    if rank > min(up.shape[0], down.shape[1]):
        return svd(up.float() @ down.float())
    q_up, r_up = _orthonormal_basis(up.double())
    q_down, r_down = _orthonormal_basis(down.double().t())
    u, s, vh = torch.linalg.svd(r_up @ r_down.t(), full_matrices=False)
    return (q_up @ u).float(), s.float(), (vh @ q_down.t()).float()


def check_dynamic(method: str | None, param: float | None) -> None:
    if method is None:
        return
    if method not in DYNAMIC_METHODS:
        raise LorakitError(f"--dynamic {method}: unknown; use one of {', '.join(DYNAMIC_METHODS)}.")
    if param is None:
        raise LorakitError(f"--dynamic {method} needs --dynamic-param (see lorakit resize --help).")
    if method == "sv_ratio" and param < 1:
        raise LorakitError(
            f"--dynamic-param {param}: sv_ratio keeps singular values above the largest divided by P, "
            "so P must be at least 1 (e.g. 20)."
        )
    if method != "sv_ratio" and not 0 < param <= 1:
        raise LorakitError(
            f"--dynamic-param {param}: {method} keeps a fraction of the {'Frobenius norm' if method == 'sv_fro' else 'sum of singular values'}, "
            "so P must be in (0, 1] (e.g. 0.9)."
        )


def choose_rank(s: torch.Tensor, max_rank: int, method: str | None = None, param: float | None = None) -> int:
    """How many singular values to keep (`s` sorted descending), never more than `max_rank`.

    sv_ratio: those larger than s[0] / param. sv_fro: the fewest whose squares hold param² of
    the sum of squares (param of the Frobenius norm). sv_cumulative: the fewest holding param of
    the sum of singular values. A zero matrix keeps rank 1.
    """
    s = s.double()
    n = s.numel()
    if n == 0 or s[0] <= MIN_SV:
        return 1
    if method is None:
        rank = max_rank
    elif method == "sv_ratio":
        rank = int((s > s[0] / param).sum())
    elif method == "sv_cumulative":
        rank = int(torch.searchsorted(torch.cumsum(s, 0) / s.sum(), torch.tensor(param, dtype=s.dtype))) + 1
    elif method == "sv_fro":
        squares = s.pow(2)
        target = torch.tensor(param * param, dtype=s.dtype)
        rank = int(torch.searchsorted(torch.cumsum(squares, 0) / squares.sum(), target)) + 1
    else:
        raise LorakitError(f"unknown rank method {method!r}; use one of {', '.join(DYNAMIC_METHODS)}.")
    return max(1, min(rank, n, max_rank))


@dataclass
class Retained:
    """What a rank-k truncation keeps: of the Frobenius norm, and of the sum of singular values."""

    fro: float
    sum: float


def retained(s: torch.Tensor, rank: int) -> Retained:
    s = s.double()
    total_sq, total = float(s.pow(2).sum()), float(s.sum())
    if total_sq == 0:
        return Retained(1.0, 1.0)
    return Retained(math.sqrt(float(s[:rank].pow(2).sum()) / total_sq), float(s[:rank].sum()) / total)


def quantile(values: torch.Tensor, q: float) -> float:
    """torch.quantile (linear interpolation), also for inputs over its size limit."""
    flat = values.detach().flatten().float()
    if flat.numel() <= _QUANTILE_LIMIT:
        return float(torch.quantile(flat, q))
    ordered = flat.sort().values
    position = q * (ordered.numel() - 1)
    low = int(math.floor(position))
    high = min(low + 1, ordered.numel() - 1)
    return float(ordered[low] + (ordered[high] - ordered[low]) * (position - low))


def truncate(
    u: torch.Tensor, s: torch.Tensor, vh: torch.Tensor, rank: int, clamp_quantile: float | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(up, down) = (U_k·S_k, V_kᵀ), optionally clamped as sd-scripts' extract does: both to
    ±(the clamp_quantile quantile of their values together), which tames outliers that fp16
    files and some clients handle badly, at the cost of exactness."""
    up = u[:, :rank] * s[:rank]
    down = vh[:rank]
    if clamp_quantile is not None and clamp_quantile < 1:
        high = quantile(torch.cat([up.flatten(), down.flatten()]), clamp_quantile)
        up, down = up.clamp(-high, high), down.clamp(-high, high)
    return up, down


def factor_shapes(
    up: torch.Tensor, down: torch.Tensor, shape: tuple[int, ...]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Shape 2-D factors for a layer of weight `shape`: Linear [out,r]/[r,in]; conv [out,r,1,1]/[r,in,kh,kw]."""
    if len(shape) == 4:
        return up.reshape(shape[0], -1, 1, 1), down.reshape(-1, *shape[1:])
    return up, down
