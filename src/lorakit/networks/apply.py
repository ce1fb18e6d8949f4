"""Applying files to a model: strength, A1111 block weights, several networks, merge and unmerge.

Applying is merging into the base weights (inference then runs at the base model's speed) with a
copy of each touched weight kept aside, so `unmerge()` restores the model bit for bit rather than
subtracting (which float rounding would not undo exactly).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from .blocks import lbw_weights
from .reading import NetworkFile, load_network


@dataclass
class NetworkSpec:
    """One network to apply: a file (or loaded NetworkFile), its strength, optional LBW vector
    (17/26 values SD1, 12/20 SDXL, or a preset name such as "OUTALL"), and optionally a separate
    strength for the U-Net (A1111's `<lora:name:TE:UNET>`; `multiplier` then scales the text
    encoders only)."""

    network: str | Path | NetworkFile
    multiplier: float = 1.0
    block_weights: str | Sequence[float] | None = None
    unet_multiplier: float | None = None


def _spec(item) -> NetworkSpec:
    if isinstance(item, NetworkSpec):
        return item
    if isinstance(item, (tuple, list)):
        return NetworkSpec(*item)
    return NetworkSpec(item)


def _loaded(model, network: str | Path | NetworkFile) -> NetworkFile:
    if isinstance(network, NetworkFile) and network.layers:
        return network
    source = network.source if isinstance(network, NetworkFile) else network
    return load_network(source, model=model)


def layer_strength(
    layer, multiplier: float, blocks: dict[str, float] | None, unet_multiplier: float | None = None
) -> float:
    """Strength x the block weight of the layer's LBW block (BASE for the text encoders); layers
    outside every block (time embedding, out) take the strength alone. U-Net layers take
    `unet_multiplier` instead of `multiplier` when it is given."""
    if unet_multiplier is not None and layer.part == "unet":
        multiplier = unet_multiplier
    if blocks is None or not layer.lbw:
        return multiplier
    return multiplier * blocks.get(layer.lbw, 0.0)


def _on_device(module, device: torch.device) -> None:
    """Deltas are computed where the weights are (a model on the GPU, a file read to the CPU)."""
    if any(t.device != device for t in module.tensors.values()):
        module.tensors = {k: v.to(device) for k, v in module.tensors.items()}


def network_deltas(
    model, network: str | Path | NetworkFile, multiplier: float = 1.0, block_weights=None
) -> dict[str, torch.Tensor]:
    """sd-scripts name -> the delta this network adds to that layer's weight at this strength and
    block weights (DoRA included), in float32. Evaluation and merge tools build on this."""
    net = _loaded(model, network)
    blocks = lbw_weights(block_weights, model.family) if block_weights is not None else None
    out = {}
    with torch.no_grad():
        for name, module in net.modules.items():
            layer = net.layers[name]
            strength = layer_strength(layer, multiplier, blocks)
            if strength != 0:
                _on_device(module, layer.module.weight.device)
                out[name] = module.merged_delta(layer.module.weight.detach()) * strength
    return out


class MergedNetworks:
    """Networks merged into a model; `unmerge()` puts the original weights back exactly."""

    def __init__(self, model):
        self.model = model
        self._originals: dict[int, tuple[torch.nn.Parameter, torch.Tensor]] = {}
        self.words: list[str] = []  # the bundled embeddings made usable in prompts, as in A1111

    def add(self, spec: NetworkSpec) -> None:
        net = _loaded(self.model, spec.network)
        blocks = (
            lbw_weights(spec.block_weights, self.model.family) if spec.block_weights is not None else None
        )
        with torch.no_grad():
            for name, module in net.modules.items():
                layer = net.layers[name]
                weight = layer.module.weight
                _, original = self._originals.setdefault(id(weight), (weight, weight.detach().clone()))
                strength = layer_strength(layer, spec.multiplier, blocks, spec.unet_multiplier)
                if strength == 0:
                    continue
                # each network's delta is taken against the original weight, as A1111 does
                _on_device(module, weight.device)
                delta = module.merged_delta(original) * strength
                weight.copy_((weight.float() + delta).to(weight.dtype))
        for embedding in net.embeddings:
            self.model.embeddings.add(self.model, embedding)
            self.words.append(embedding.name)

    def unmerge(self) -> None:
        with torch.no_grad():
            for weight, original in self._originals.values():
                weight.copy_(original)
        self._originals.clear()
        for word in self.words:
            self.model.embeddings.deactivate(word)
        self.words.clear()


def merge_networks(model, networks: Sequence) -> MergedNetworks:
    """Merge networks into `model`'s weights. Each item: a path, a NetworkFile, a NetworkSpec or a
    tuple (path, multiplier[, block_weights]). Returns a handle whose `unmerge()` undoes it."""
    merged = MergedNetworks(model)
    try:
        for item in networks:
            merged.add(_spec(item))
    except Exception:
        merged.unmerge()
        raise
    return merged


@contextlib.contextmanager
def applied(model, networks: Sequence) -> Iterator[MergedNetworks]:
    """`with applied(model, [("a.safetensors", 0.8, "OUTALL")]):` sample, then the model is restored."""
    merged = merge_networks(model, networks)
    try:
        yield merged
    finally:
        merged.unmerge()
