"""Shared pieces of the tools tests: LoRA files with known factors, deltas read back by hand.

Deltas are computed from the saved tensors with `network_helpers.hand_delta` (the documented
client rules, written without lorakit's code), and SVDs in float64 with torch.linalg directly.
"""

from __future__ import annotations

import torch
from network_helpers import hand_delta, modules_of, randomize, read_file
from safetensors.torch import save_file

from lorakit.networks import create_network
from lorakit.networks.naming import LayerIndex

ALGOS = {
    "lora": ("networks.lora", []),
    "locon": ("networks.lora", ["conv_dim=3", "conv_alpha=2"]),
    "loha": ("lycoris.kohya", ["algo=loha", "conv_dim=2", "conv_alpha=1"]),
    "lokr": ("lycoris.kohya", ["algo=lokr", "factor=4", "conv_dim=2"]),
    "dora": ("lycoris.kohya", ["algo=lora", "dora_wd=true", "conv_dim=2"]),
}


def make_lora(model, path, algo: str = "lora", dim: int = 4, alpha: float = 2, seed: int = 1, args=(), **kw):
    module, base_args = ALGOS[algo]
    net = create_network(model, module, dim, alpha, [*base_args, *args], **kw)
    randomize(net, seed=seed)
    return net.save(path)


def file_deltas(path, shapes: dict[str, tuple[int, ...]] | None = None) -> dict[str, torch.Tensor]:
    """sd-scripts name -> ΔW (float64) from a kohya file, by the clients' rules."""
    out = {}
    for name, t in modules_of(read_file(path)[0]).items():
        if shapes is not None:
            shape = shapes[name]
        else:
            up, down = t["lora_up.weight"], t["lora_down.weight"]
            shape = (up.shape[0], *down.shape[1:])
        out[name] = hand_delta(t, shape)
    return out


def layer_shapes(model) -> dict[str, tuple[int, ...]]:
    return {name: layer.weight_shape for name, layer in LayerIndex.for_model(model).layers.items()}


def layer_weights(model) -> dict[str, torch.Tensor]:
    return {
        name: layer.module.weight.detach().double()
        for name, layer in LayerIndex.for_model(model).layers.items()
    }


def orthonormal(rows: int, cols: int, seed: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(
        torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    )
    return q


def spectrum_module(out_dim: int, in_dim: int, singular: list[float], alpha: float, seed: int, kernel=None):
    """LoRA factors whose product has exactly these singular values: up = U·S, down = Vᵀ (then
    reshaped for a conv); with the alpha/rank scale, ΔW's singular values are scale·S."""
    rank = len(singular)
    u = orthonormal(out_dim, rank, seed)
    cols = in_dim * (kernel[0] * kernel[1] if kernel else 1)
    v = orthonormal(cols, rank, seed + 1000)
    up = (u * torch.tensor(singular, dtype=torch.float64)).float()
    down = v.t().float()
    if kernel:
        up = up.reshape(out_dim, rank, 1, 1)
        down = down.reshape(rank, in_dim, *kernel)
    return {"lora_up.weight": up, "lora_down.weight": down, "alpha": torch.tensor(float(alpha))}


def write_kohya(path, modules: dict[str, dict[str, torch.Tensor]], metadata=None):
    tensors = {
        f"{name}.{suffix}": t.contiguous() for name, parts in modules.items() for suffix, t in parts.items()
    }
    save_file(tensors, str(path), metadata=metadata or {})
    return path


def truncated(matrix: torch.Tensor, rank: int) -> torch.Tensor:
    """The rank-k truncated SVD of a matrix (float64), computed here independently."""
    flat = matrix.reshape(matrix.shape[0], -1).double()
    u, s, vh = torch.linalg.svd(flat, full_matrices=False)
    return ((u[:, :rank] * s[:rank]) @ vh[:rank]).reshape(matrix.shape)
