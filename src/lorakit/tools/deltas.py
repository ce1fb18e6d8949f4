"""A file module's full delta when no base model is loaded (LoRA-to-LoRA merge, resize).

The delta needs the layer's weight shape. A LoRA's factors carry it (down [r,in(,kh,kw)], up
[out,r]), and so does a Tucker LoHa, but a plain LoHa/LoKr module stores a conv kernel
flattened into its columns: there the shape comes from the layer index of the family (the
full-size model built on the meta device) or of a model the caller passes.
"""

from __future__ import annotations

import torch

from ..networks.errors import NetworkError
from ..networks.naming import Layer
from ..networks.reading import ModuleWeights, NetworkFile

TRAINED_FORMS = "LoRA/LoCon without Tucker (lora_mid) and without DoRA"


def layer_shape(name: str, module: ModuleWeights, layer: Layer | None, source: str) -> tuple[int, ...]:
    """The factors' own word first (exact for the file at hand), the layer index only where the
    factors leave the kernel open."""
    t = module.tensors
    algo = module.algo
    if algo == "lora":
        out = t["lora_up.weight"].shape[0]
        down = t["lora_down.weight"]
        if "lora_mid.weight" in t:
            return (out, down.shape[1], *t["lora_mid.weight"].shape[2:])
        return (out, *down.shape[1:])
    if algo == "loha" and "hada_t1" in t:
        return (t["hada_w1_a"].shape[1], t["hada_w1_b"].shape[1], *t["hada_t1"].shape[2:])
    if layer is not None:
        return layer.weight_shape
    raise NetworkError(
        f"{source}: module {name} ({algo}) does not say its layer's shape, and the file's base model "
        "family is unknown, so the layer cannot be looked up. Add ss_base_model_version to the file "
        "(e.g. with a LoRA editor) or use the Python API with model=... ."
    )


def on_device(module: ModuleWeights, device: torch.device) -> ModuleWeights:
    if device.type == "cpu":
        return module
    return ModuleWeights({k: v.to(device) for k, v in module.tensors.items()}, module.alpha)


def is_plain_lora(module: ModuleWeights) -> bool:
    return module.algo == "lora" and "lora_mid.weight" not in module.tensors and module.dora_scale is None


def require_plain_lora(module: ModuleWeights, name: str, source: str, what: str, instead: str) -> None:
    if not is_plain_lora(module):
        kind = (
            "DoRA"
            if module.dora_scale is not None
            else ("Tucker LoCon" if module.algo == "lora" else module.algo)
        )
        raise NetworkError(
            f"{source}: module {name} is {kind}; {what} works on {TRAINED_FORMS} factors only. {instead}"
        )


def require_no_dora(module: ModuleWeights, name: str, source: str, instead: str) -> None:
    if module.dora_scale is not None:
        raise NetworkError(
            f"{source}: module {name} is DoRA, whose effect depends on the base model's weights "
            f"(m·(W+ΔW)/‖W+ΔW‖), so it cannot be combined into another LoRA without them. {instead}"
        )


def require_resolved(network: NetworkFile) -> None:
    """A diffusers/PEFT file whose names did not map to sd-scripts names would be written with
    names no client reads; refuse it rather than write such a file."""
    if network.unmatched or any(":" in name for name in network.modules):
        first = (network.unmatched or [n for n in network.modules if ":" in n])[0]
        raise NetworkError(
            f"{network.source}: module {first} has a name lorakit cannot map to an sd-scripts name (the file "
            "does not say its base model, or is for another one); convert it with a base model first."
        )
