"""A base model's weights, layer by layer, without loading the model.

A LoRA names layers (`lora_unet_...`, `lora_te2_...`); a single-file checkpoint stores them
under original LDM/SGM keys, some in another shape: OpenCLIP fuses q, k and v into one
`in_proj_weight` (each LoRA module then owns a third of its rows), and the VAE's attention is
stored as 1x1 convolutions. The model structure is read from the file's header alone
(`load_structure`), each layer is mapped to its key and op by the same key maps the loader uses,
and a weight is read only when asked for.
"""

from __future__ import annotations

from collections.abc import Container
from pathlib import Path

import torch

from ..errors import ModelError
from ..models.ldm.clip import open_clip_name
from ..models.ldm.common import SAME, Op, to_diffusers
from ..models.ldm.unet import ldm_name
from ..models.load import load_model, load_structure
from ..models.model import StableDiffusionModel
from ..networks.naming import Layer, LayerIndex
from .streaming import TensorReader


def encoder_index(part: str) -> int:
    return 0 if part == "text_encoder" else int(part.rsplit("_", 1)[1]) - 1


def layer_key(model: StableDiffusionModel, layer: Layer, keys: Container[str]) -> tuple[str, Op]:
    """The single-file key holding `layer`'s weight, and the op that turns it into the layer's shape."""
    family = model.family
    if layer.part == "unet":
        return family.unet_prefix + ldm_name(layer.path + ".weight", model.unet.config), SAME
    index = encoder_index(layer.part)
    prefix = family.text_prefixes[index]
    if family.open_clip[index]:
        name, op = open_clip_name(layer.path + ".weight")
        return prefix + name, op
    inner = prefix + "text_model." + layer.path + ".weight"  # both spellings exist in the wild
    return (inner if inner in keys else prefix + layer.path + ".weight"), SAME


def add_in_original(target: torch.Tensor, delta: torch.Tensor, op: Op) -> None:
    """target (an original-layout tensor) += delta (in the layer's shape), in place."""
    if op.kind == "chunk":
        rows = target.shape[0] // op.parts
        part = target[op.index * rows : (op.index + 1) * rows]
        part += delta.reshape(part.shape)
    elif op.kind == "transpose":
        target += delta.t()
    else:  # "same", and "squeeze" (a 1x1 conv stored 4-D, used 2-D)
        target += delta.reshape(target.shape)


class _Weights:
    """What both kinds of weights give: the model, its family and its layers."""

    def __init__(self, path: Path, model: StableDiffusionModel):
        self.path = path
        self.model = model
        self.family = model.family
        self.index = LayerIndex.for_model(model)


class CheckpointWeights(_Weights):
    """A single-file checkpoint read layer by layer; `model` has meta-device components."""

    streamed = True

    def __init__(self, path: str | Path):
        super().__init__(Path(path), load_structure(Path(path)))
        self.reader = TensorReader(self.path)
        self._last: tuple[str, torch.Tensor] | None = None

    def key(self, layer: Layer) -> tuple[str, Op]:
        key, op = layer_key(self.model, layer, self.reader)
        if key not in self.reader:
            raise ModelError(
                f"{self.path} is incomplete: tensor '{key}' (layer {layer.name}) is missing. Use a complete checkpoint."
            )
        return key, op

    def weight(self, layer: Layer) -> torch.Tensor:
        key, op = self.key(layer)
        if self._last is None or self._last[0] != key:  # fused q/k/v: one read for three layers
            self._last = (key, self.reader[key])
        return to_diffusers(self._last[1], op)


class LoadedWeights(_Weights):
    """The same interface over a model loaded in memory (a diffusers folder)."""

    streamed = False

    def __init__(self, path: str | Path):
        super().__init__(Path(path), load_model(Path(path)))

    def weight(self, layer: Layer) -> torch.Tensor:
        return layer.module.weight.detach()


def open_weights(path: str | Path) -> CheckpointWeights | LoadedWeights:
    """Streamed for a single file; a diffusers folder is loaded (its components are separate files)."""
    return LoadedWeights(path) if Path(path).is_dir() else CheckpointWeights(path)
