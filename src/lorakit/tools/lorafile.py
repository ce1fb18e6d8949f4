"""The LoRA files the tools write: plain kohya LoRA/LoCon factors, and metadata that says where
they came from (what was merged with which weights, what was resized or extracted)."""

from __future__ import annotations

import datetime
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..networks.file import MODELSPEC_VERSION
from ..networks.reading import NetworkFile

# per-file keys: they describe one training run or one file's bytes, never a merge of several
_RUN_KEYS = ("ss_session_id", "ss_training_started_at", "ss_training_finished_at", "ss_output_name")
_BASE_SPEC = (
    "modelspec.architecture",
    "modelspec.implementation",
    "modelspec.resolution",
    "modelspec.prediction_type",
    "modelspec.encoder_layer",
)


@dataclass
class Factors:
    """One output module: ΔW = up @ down · alpha / rank (plus any tensor carried as is, e.g. dora_scale)."""

    up: torch.Tensor
    down: torch.Tensor
    alpha: float
    extra: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def rank(self) -> int:
        return self.down.shape[0]

    @property
    def is_conv_kxk(self) -> bool:
        return self.down.dim() == 4 and tuple(self.down.shape[2:]) != (1, 1)


def kohya_tensors(modules: Mapping[str, Factors]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for name, f in modules.items():
        out[f"{name}.lora_down.weight"] = f.down.detach().cpu().contiguous()
        out[f"{name}.lora_up.weight"] = f.up.detach().cpu().contiguous()
        out[f"{name}.alpha"] = torch.tensor(float(f.alpha))
        for suffix, tensor in f.extra.items():
            out[f"{name}.{suffix}"] = tensor.detach().cpu().contiguous()
    return out


def _one_or_dynamic(values: set) -> str:
    if len(values) == 1:
        value = next(iter(values))
        return str(float(value)) if isinstance(value, float) else str(value)
    return "Dynamic"


def network_keys(modules: Mapping[str, Factors]) -> dict[str, str]:
    """ss_network_* for factors: one dim/alpha when all modules agree, else "Dynamic" (sd-scripts'
    word), conv_dim/conv_alpha in the args when there are kxk convolutions."""
    linear = [f for f in modules.values() if not f.is_conv_kxk]
    conv = [f for f in modules.values() if f.is_conv_kxk]
    keys = {
        "ss_network_module": "networks.lora",
        "ss_network_dim": _one_or_dynamic({f.rank for f in linear}) if linear else "0",
        "ss_network_alpha": _one_or_dynamic({float(f.alpha) for f in linear}) if linear else "0",
    }
    args: dict[str, str] = {}
    if conv:
        args["conv_dim"] = _one_or_dynamic({f.rank for f in conv})
        args["conv_alpha"] = _one_or_dynamic({float(f.alpha) for f in conv})
    if any("dora_scale" in f.extra for f in modules.values()):
        keys["ss_network_module"] = "lycoris.kohya"
        args = {"algo": "lora", "dora_wd": "True", **args}
    keys["ss_network_args"] = json.dumps(args) if args else ""
    return keys


def file_title(network: NetworkFile) -> str:
    meta = network.metadata
    return meta.get("modelspec.title") or meta.get("ss_output_name") or Path(network.source).stem


def common_metadata(networks: Sequence[NetworkFile]) -> dict[str, str]:
    """ss_* keys every input agrees on (the base model, clip skip, ...), and the modelspec keys
    that describe the base model; run- and file-specific keys are dropped."""
    first = networks[0].metadata
    out = {}
    for key, value in first.items():
        if not (key.startswith("ss_") or key in _BASE_SPEC) or key in _RUN_KEYS:
            continue
        if all(n.metadata.get(key) == value for n in networks[1:]):
            out[key] = value
    return out


def stamp(metadata: dict[str, str], title: str, merged_from: str | None = None) -> dict[str, str]:
    """modelspec title/date (and merged_from) for a file the tools made; other modelspec keys are
    written only when the inputs had them, since they name a base model lorakit cannot guess."""
    if any(k.startswith("modelspec.") for k in metadata):
        metadata["modelspec.sai_model_spec"] = MODELSPEC_VERSION
        metadata["modelspec.title"] = title
        metadata["modelspec.date"] = datetime.datetime.now().astimezone().replace(microsecond=0).isoformat()
    if merged_from:
        metadata["modelspec.merged_from"] = merged_from
    return metadata


def stored_dtype(network: NetworkFile) -> torch.dtype:
    """The precision a file's factors are stored in: the default precision of what is made from it."""
    for module in network.modules.values():
        for tensor in module.tensors.values():
            if tensor.is_floating_point():
                return tensor.dtype
    return torch.float32
