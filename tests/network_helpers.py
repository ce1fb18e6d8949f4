"""Shared pieces of the network tests: tiny models, random network weights, hand-written deltas.

The hand deltas follow the documented file formats (sd-scripts, LyCORIS, the clients' scale
rules) and are written here without lorakit's functional code, so a test compares two
independent computations.
"""

from __future__ import annotations

import copy
import dataclasses
import functools

import torch
from safetensors import safe_open

from lorakit.models.tiny import random_model


@functools.cache
def _pristine(family: str, seed: int):
    return random_model(family, "v_prediction" if family == "sd2" else "epsilon", seed=seed)


def tiny(family: str = "sd1", seed: int = 0):
    """A fresh tiny model (same weights for the same seed). Copies the U-Net and text encoders
    of one cached model; the VAE and tokenizers, which no network touches, are shared."""
    base = _pristine(family, seed)
    return dataclasses.replace(
        base, unet=copy.deepcopy(base.unet), text_encoders=[copy.deepcopy(te) for te in base.text_encoders]
    )


def randomize(network, seed: int = 1, std: float = 0.1) -> None:
    """Give every factor random values (a fresh network has ΔW = 0, which proves nothing)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in network.named_parameters():
            if name.endswith("dora_scale"):
                p.mul_(1.0 + 0.2 * torch.rand(p.shape, generator=gen))
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * std)


def read_file(path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})


def modules_of(tensors: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    out: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        name, _, suffix = key.partition(".")
        out.setdefault(name, {})[suffix] = value.double()
    return out


def hand_delta(t: dict[str, torch.Tensor], shape) -> torch.Tensor:
    """ΔW from one module's saved tensors, by the rules the clients apply."""
    alpha = t["alpha"].item() if "alpha" in t else None
    out_dim = shape[0]
    if "lora_down.weight" in t:
        down, up = t["lora_down.weight"], t["lora_up.weight"]
        r = down.shape[0]
        if "lora_mid.weight" in t:  # Tucker: 1x1 down, kxk mid, 1x1 up
            d = torch.einsum(
                "a b h w, o a, b i -> o i h w", t["lora_mid.weight"], up[:, :, 0, 0], down[:, :, 0, 0]
            )
        else:
            d = (up.reshape(out_dim, r) @ down.reshape(r, -1)).reshape(shape)
        return d * (1.0 if alpha is None else alpha / r)
    if "hada_w1_a" in t:
        r = t["hada_w1_b"].shape[0]
        if "hada_t1" in t:
            m1 = torch.einsum("a b h w, b i, a o -> o i h w", t["hada_t1"], t["hada_w1_b"], t["hada_w1_a"])
            m2 = torch.einsum("a b h w, b i, a o -> o i h w", t["hada_t2"], t["hada_w2_b"], t["hada_w2_a"])
        else:
            m1 = (t["hada_w1_a"] @ t["hada_w1_b"]).reshape(shape)
            m2 = (t["hada_w2_a"] @ t["hada_w2_b"]).reshape(shape)
        return m1 * m2 * (1.0 if alpha is None else alpha / r)
    w1 = t["lokr_w1"] if "lokr_w1" in t else t["lokr_w1_a"] @ t["lokr_w1_b"]
    w2 = t["lokr_w2"] if "lokr_w2" in t else t["lokr_w2_a"] @ t["lokr_w2_b"]
    decomposed = "lokr_w1" not in t or "lokr_w2" not in t
    r = t["lokr_w2_b"].shape[0] if "lokr_w2_b" in t else (t["lokr_w1_b"].shape[0] if "lokr_w1_b" in t else 1)
    scale = alpha / r if (decomposed and alpha is not None) else 1.0
    # kron by definition: block (i, p) of the result is w1[i, p] * w2
    w2 = w2.reshape(w2.shape[0], -1)
    a, c = w1.shape
    b, d = w2.shape
    out = torch.zeros(a * b, c * d, dtype=w1.dtype)
    for i in range(a):
        for p in range(c):
            out[i * b : (i + 1) * b, p * d : (p + 1) * d] = w1[i, p] * w2
    return out.reshape(shape) * scale


def dora_hand(weight: torch.Tensor, delta: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    """m · (W+ΔW) / ‖W+ΔW‖ per output row, minus W (the merged delta of a DoRA module)."""
    merged = weight + delta
    norms = torch.stack([row.norm() for row in merged.reshape(merged.shape[0], -1)])
    shape = (merged.shape[0],) + (1,) * (merged.dim() - 1)
    return merged * (magnitude.reshape(shape) / norms.reshape(shape)) - weight


def layer_weights(model) -> dict[str, torch.Tensor]:
    out = {}
    for part, module in [("unet", model.unet)] + [(f"te{i}", te) for i, te in enumerate(model.text_encoders)]:
        for key, value in module.state_dict().items():
            out[f"{part}.{key}"] = value.clone()
    return out
