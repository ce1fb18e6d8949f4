"""The one place evaluation touches `lorakit.networks`: merge a set of networks into the loaded
model and take them out again.

Merging (rather than hooking layers) keeps each image at the base model's speed, and the networks
package restores the original weights bit for bit on unmerge, so a grid can go from one LoRA to
the next without reloading the base model, and "weight 0" gives exactly the base image.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..errors import LorakitError
from ..networks import NetworkSpec, load_network, merge_networks
from ..networks.blocks import lbw_weights
from ..networks.hypernetwork import Hypernetwork, read_hypernetwork
from .prompts import LoraRef


class NetworkSwitcher:
    """Keeps one set of networks merged into `model`; asking for another set restores the base
    weights first. Files are read once and kept, on the model's device."""

    def __init__(self, model):
        self.model = model
        self._files: dict[Path, object] = {}
        self._merged = None
        self._key: tuple = ()
        self.merges = 0  # how many times a set was merged (tests count swaps)

    def _file(self, path: Path):
        path = Path(path).resolve()
        if path not in self._files:
            self._files[path] = load_network(path, model=self.model)
        return self._files[path]

    def use(self, loras: Sequence[LoraRef]) -> None:
        key = tuple((str(Path(r.path).resolve()), float(r.weight), r.unet, r.blocks) for r in loras)
        if key == self._key:
            return
        self.clear()
        if loras:
            specs = [NetworkSpec(self._file(r.path), r.weight, r.blocks, r.unet_weight) for r in loras]
            self._merged = merge_networks(self.model, specs)
            self.merges += 1
        self._key = key

    def clear(self) -> None:
        if self._merged is not None:
            self._merged.unmerge()
            self._merged = None
        self._key = ()

    def check(self, lora: LoraRef) -> None:
        """Read `lora` now, so a bad file or block vector fails before any image is made."""
        self._file(lora.path)
        if lora.blocks is not None:
            lbw_weights(lora.blocks, self.model.family)


def parse_hypernetwork_option(text: str) -> tuple[Path, float]:
    """`FILE[:STRENGTH]` (a Windows drive letter's colon stays part of the path)."""
    path, _, strength = text.rpartition(":")
    try:
        if path and not (len(path) == 1 and path.isalpha()):
            return Path(path), float(strength)
    except ValueError:
        pass
    return Path(text), 1.0


def hook_hypernetworks(model, options: Sequence[str]) -> list[tuple[Hypernetwork, float]]:
    """A1111's hypernetworks (`--hypernetwork FILE:STRENGTH`) on `model` until `remove()`d: each
    changes the keys' and values' input of every attention of its widths; several chain in order."""
    out = []
    for text in options:
        path, strength = parse_hypernetwork_option(text)
        if not path.exists():
            raise LorakitError(f"--hypernetwork {text}: no such file {path}.")
        net = read_hypernetwork(path).to(model.unet.device).set_multiplier(strength).apply_to(model)
        out.append((net, strength))
    return out
