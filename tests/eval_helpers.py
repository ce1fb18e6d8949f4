"""Helpers for the evaluation tests: kohya-format LoRA files written by hand for tiny models, and
the same delta merged by hand, so tests compare lorakit against an independent computation."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

RANK = 4
ALPHA = 2.0


def target_layers(model) -> dict[str, tuple[torch.nn.Module, str]]:
    """kohya name -> (Linear, part) for the attention projections of an SD1/SD2 tiny model:
    `lora_unet_` + the diffusers path, `lora_te_text_model_` + the CLIP path, dots as underscores."""
    layers = {}
    for path, module in model.unet.named_modules():
        if isinstance(module, torch.nn.Linear) and path.split(".")[-1] in ("to_q", "to_k", "to_v"):
            layers["lora_unet_" + path.replace(".", "_")] = (module, "unet")
    encoder = model.text_encoders[0]
    for path, module in encoder.named_modules():  # `text_model.` prefix or not, by transformers version
        if isinstance(module, torch.nn.Linear) and path.endswith(("q_proj", "v_proj")):
            path = path.removeprefix("text_model.")
            layers["lora_te_text_model_" + path.replace(".", "_")] = (module, "te")
    return layers


def lora_tensors(model, seed: int, scale: float = 0.3) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, (module, _) in target_layers(model).items():
        out_f, in_f = module.weight.shape
        tensors[f"{name}.lora_down.weight"] = torch.randn(RANK, in_f, generator=g) * scale
        tensors[f"{name}.lora_up.weight"] = torch.randn(out_f, RANK, generator=g) * scale
        tensors[f"{name}.alpha"] = torch.tensor(ALPHA)
    return tensors


def write_lora(path: Path, model, seed: int, scale: float = 0.3) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(lora_tensors(model, seed, scale), str(path), metadata={"ss_network_dim": str(RANK)})
    return path


def merge_by_hand(model, tensors: dict[str, torch.Tensor], weight: float) -> None:
    """W += weight * up @ down * alpha / rank, for each module of the file."""
    with torch.no_grad():
        for name, (module, _) in target_layers(model).items():
            down = tensors[f"{name}.lora_down.weight"].double()
            up = tensors[f"{name}.lora_up.weight"].double()
            alpha = float(tensors[f"{name}.alpha"])
            delta = (up @ down) * (alpha / down.shape[0]) * weight
            module.weight.copy_((module.weight.double() + delta).to(module.weight.dtype))
