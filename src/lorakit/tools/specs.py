"""Which LoRAs to merge, at which weights: the --lora FILE[:WEIGHT[:BLOCKS]] syntax, the
per-module strength with A1111 block weights, and the recipe a merged file records."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import LorakitError
from ..models.families import Family
from ..networks.apply import layer_strength
from ..networks.blocks import lbw_weights
from ..networks.errors import NetworkError
from ..networks.naming import LayerIndex
from ..networks.reading import NetworkFile
from .lorafile import file_title

RECIPE_KEY = "lorakit_merge_recipe"


@dataclass
class LoraSpec:
    """One LoRA to merge: its file, its weight, and an optional A1111 LBW vector or preset."""

    path: Path
    weight: float = 1.0
    blocks: str | Sequence[float] | None = None

    def __post_init__(self):
        self.path = Path(self.path)

    def label(self) -> str:
        """FILE-STEM:WEIGHT[:BLOCKS], the --lora syntax: what modelspec.merged_from lists (file
        names, as sd-scripts lists them; titles are often a generic "LoRA@date")."""
        text = f"{self.path.stem}:{self.weight:g}"
        if self.blocks is None:
            return text
        blocks = self.blocks if isinstance(self.blocks, str) else ",".join(f"{v:g}" for v in self.blocks)
        return f"{text}:{blocks}"


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def parse_lora_spec(text: str) -> LoraSpec:
    """PATH[:WEIGHT[:BLOCKS]], read from the right so Windows paths (C:\\...) keep their colon."""
    parts = text.split(":")
    if len(parts) >= 3 and _is_number(parts[-2]) and not _is_number(parts[-1]) and parts[-1]:
        return LoraSpec(Path(":".join(parts[:-2])), float(parts[-2]), parts[-1])
    if len(parts) >= 2 and _is_number(parts[-1]):
        return LoraSpec(Path(":".join(parts[:-1])), float(parts[-1]))
    return LoraSpec(Path(text))


def as_spec(item) -> LoraSpec:
    if isinstance(item, LoraSpec):
        return item
    if isinstance(item, (tuple, list)):
        return LoraSpec(*item)
    if isinstance(item, str):
        return parse_lora_spec(item)
    return LoraSpec(Path(item))


def check_exists(specs: Sequence[LoraSpec]) -> None:
    for spec in specs:
        if not spec.path.is_file():
            raise LorakitError(f"LoRA file {spec.path} does not exist. Check the path given with --lora.")


def module_strengths(
    net: NetworkFile, spec: LoraSpec, family: Family | None, index: LayerIndex | None
) -> dict[str, float]:
    """Module -> weight x its LBW block weight (the rule `merge_networks` applies)."""
    if spec.blocks is None:
        return dict.fromkeys(net.modules, spec.weight)
    if family is None:
        raise NetworkError(
            f"{net.source}: block weights need to know the base model family, and the file does not say it."
        )
    blocks = lbw_weights(spec.blocks, family)
    out = {}
    for name in net.modules:
        layer = net.layers.get(name) or (index.get(name) if index is not None else None)
        if layer is None:
            raise NetworkError(
                f"{net.source}: module {name} matches no layer of a {family.label} model, so its block "
                "is unknown; block weights cannot be applied to this file."
            )
        out[name] = layer_strength(layer, spec.weight, blocks)
    return out


def recipe_entry(spec: LoraSpec, net: NetworkFile) -> dict:
    return {
        "file": spec.path.name,
        "title": file_title(net),
        "weight": spec.weight,
        "blocks": spec.blocks if spec.blocks is None or isinstance(spec.blocks, str) else list(spec.blocks),
        "sshs_model_hash": net.metadata.get("sshs_model_hash"),
    }
