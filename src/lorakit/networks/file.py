"""Writing the network file: safetensors, ss_* metadata, modelspec.*, the sshs_* hashes.

The hashes are sd-scripts' (what A1111's additional-networks and civitai show): both are taken
over a file built from the tensors and the ss_* keys only, so adding a title or a description
later does not change them.
"""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import save, save_file

from ..utils.files import atomic_path
from .errors import NetworkError

PRECISIONS = {
    "fp16": torch.float16,
    "float16": torch.float16,
    "half": torch.float16,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "float": torch.float32,
    "fp32": torch.float32,
    "float32": torch.float32,
}
MODELSPEC_VERSION = "1.0.1"
SGM_IMPLEMENTATION = "https://github.com/Stability-AI/generative-models"


def resolve_precision(precision: str | torch.dtype | None) -> torch.dtype | None:
    if precision is None or isinstance(precision, torch.dtype):
        return precision
    key = str(precision).lower().removeprefix("torch.")
    if key not in PRECISIONS:
        raise NetworkError(f"save_precision {precision!r} is unknown; use float, fp16 or bf16.")
    return PRECISIONS[key]


def sshs_hashes(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> tuple[str, str]:
    """(sshs_model_hash, sshs_legacy_hash): sha256 of the bytes after the header, and the first 8
    hex digits of the sha256 of the 64 KiB at offset 1 MiB, of the file with only ss_* metadata."""
    ss_only = {k: v for k, v in metadata.items() if k.startswith("ss_")}
    data = save(dict(tensors), ss_only)
    header_len = int.from_bytes(data[:8], "little")
    model_hash = hashlib.sha256(data[8 + header_len :]).hexdigest()
    legacy_hash = hashlib.sha256(data[0x100000 : 0x100000 + 0x10000]).hexdigest()[:8]
    return model_hash, legacy_hash


def modelspec_metadata(
    model, metadata: Mapping[str, str], overrides: Mapping[str, str] | None = None
) -> dict[str, str]:
    """modelspec.* keys (SAI model spec) for a LoRA of `model`, as sd-scripts writes them."""
    now = datetime.datetime.now().astimezone()
    title = metadata.get("ss_output_name") or f"LoRA@{now.strftime('%Y-%m-%d-%H:%M:%S')}"
    spec = {
        "modelspec.sai_model_spec": MODELSPEC_VERSION,
        "modelspec.architecture": f"{model.architecture}/lora",
        "modelspec.implementation": SGM_IMPLEMENTATION if model.family.is_xl else "diffusers",
        "modelspec.title": title,
        "modelspec.resolution": f"{model.resolution}x{model.resolution}",
        "modelspec.date": now.replace(microsecond=0).isoformat(),
        "modelspec.prediction_type": "v" if model.prediction_type == "v_prediction" else "epsilon",
    }
    clip_skip = metadata.get("ss_clip_skip")
    if clip_skip not in (None, "", "None"):
        spec["modelspec.encoder_layer"] = str(clip_skip)
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        key = key if key.startswith("modelspec.") else f"modelspec.{key}"
        spec[key] = ", ".join(value) if isinstance(value, (list, tuple)) else str(value)
    return spec


def save_network_file(
    path: str | Path,
    tensors: Mapping[str, torch.Tensor],
    metadata: Mapping[str, str] | None = None,
    precision: str | torch.dtype | None = None,
    model=None,
    modelspec: Mapping[str, str] | None = None,
) -> Path:
    """Write `tensors` (file key -> tensor) to `path` atomically; returns the path.

    All tensors, alpha included, are stored in `precision` (default: as given), as sd-scripts does.
    """
    dtype = resolve_precision(precision)
    out: dict[str, torch.Tensor] = {}
    for key, tensor in tensors.items():
        t = tensor.detach().to("cpu")
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        out[key] = t.contiguous()
    meta = {k: ("" if v is None else str(v)) for k, v in (metadata or {}).items()}
    model_hash, legacy_hash = sshs_hashes(out, meta)
    meta["sshs_model_hash"] = model_hash
    meta["sshs_legacy_hash"] = legacy_hash
    if model is not None:
        meta.update(modelspec_metadata(model, meta, modelspec))
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(out, str(tmp), metadata=meta)
    return path


def read_bytes_hash(data: bytes) -> str:
    """sha256 of the bytes after a safetensors header (what sshs_model_hash records)."""
    header_len = int.from_bytes(data[:8], "little")
    return hashlib.sha256(data[8 + header_len :]).hexdigest()


def file_model_hash(path: str | Path) -> str:
    with open(path, "rb") as f:
        return read_bytes_hash(f.read())


__all__ = [
    "PRECISIONS",
    "file_model_hash",
    "modelspec_metadata",
    "resolve_precision",
    "save_network_file",
    "sshs_hashes",
]
