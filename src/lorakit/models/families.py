"""The base-model families lorakit trains on, and telling them apart from a file's keys."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from ..errors import ModelError


@dataclass(frozen=True)
class Family:
    name: str  # "sd1" | "sd2" | "sdxl"
    label: str
    text_prefixes: tuple[str, ...]  # one per text encoder, in the single-file layout
    open_clip: tuple[bool, ...]  # whether each encoder is stored in open_clip's layout
    resolution: int  # native training resolution (SD2 768-v overrides this)
    unet_prefix: str = "model.diffusion_model."
    vae_prefix: str = "first_stage_model."

    def config(self, component: str) -> dict[str, Any]:
        """The shipped diffusers config of a full-size model of this family."""
        return dict(_config(self.name, component))

    @property
    def is_xl(self) -> bool:
        return self.name == "sdxl"


SD1 = Family("sd1", "SD 1.x", ("cond_stage_model.transformer.",), (False,), 512)
SD2 = Family("sd2", "SD 2.x", ("cond_stage_model.model.",), (True,), 512)
SDXL = Family(
    "sdxl",
    "SDXL",
    ("conditioner.embedders.0.transformer.", "conditioner.embedders.1.model."),
    (False, True),
    1024,
)
FAMILIES = {f.name: f for f in (SD1, SD2, SDXL)}


@cache
def _config(family: str, component: str) -> dict[str, Any]:
    text = resources.files("lorakit.models").joinpath(f"configs/{family}/{component}.json").read_text()
    return json.loads(text)


_LORA_MARKERS = ("lora_down", "lora_up", "lora_A", "lora_B", "hada_w1", "lokr_w1", "oft_blocks", "lora.down")


def _has(keys, prefix: str) -> bool:
    return any(k.startswith(prefix) for k in keys)


def detect(keys, source: str) -> Family:
    """The family of a single-file checkpoint, or a `ModelError` saying what the file is instead."""
    keys = list(keys)
    sample = ", ".join(keys[:3])
    if not keys:
        raise ModelError(f"{source} contains no tensors; it is not a model.")
    if any(
        k.startswith(("lora_unet_", "lora_te")) or any(m in k for m in _LORA_MARKERS) for k in keys[:2000]
    ):
        raise ModelError(
            f"{source} is a LoRA (add-on network) file, not a base model. Pass a full checkpoint as the "
            "model, and this file where a LoRA is expected."
        )
    if _has(keys, "model.diffusion_model.joint_blocks.") or _has(keys, "joint_blocks."):
        raise ModelError(
            f"{source} is a Stable Diffusion 3 model, which lorakit does not support (SD1.x, SD2.x, SDXL)."
        )
    if any(".double_blocks." in k or k.startswith("double_blocks.") for k in keys):
        raise ModelError(f"{source} is a Flux model, which lorakit does not support (SD1.x, SD2.x, SDXL).")
    if "edm_mean" in keys or "edm_vpred.sigma_max" in keys:
        raise ModelError(f"{source} is an EDM model (Playground v2.5 style), which lorakit does not support.")

    has_unet = _has(keys, "model.diffusion_model.input_blocks.")
    if _has(keys, "conditioner.embedders.0.model.") and not _has(keys, "conditioner.embedders.1."):
        raise ModelError(
            f"{source} is an SDXL refiner. LoRAs are trained on the SDXL base model; use the base checkpoint."
        )
    if (
        has_unet
        and _has(keys, "conditioner.embedders.1.model.")
        and _has(keys, "conditioner.embedders.0.transformer.")
    ):
        family = SDXL
    elif has_unet and _has(keys, "cond_stage_model.model."):
        family = SD2
    elif has_unet and _has(keys, "cond_stage_model.transformer."):
        family = SD1
    elif has_unet:
        raise ModelError(
            f"{source} holds a U-Net without text encoders. lorakit needs a full checkpoint "
            "(U-Net, VAE and text encoder in one file, or a diffusers folder)."
        )
    elif _has(keys, "down_blocks.") or _has(keys, "unet.down_blocks."):
        raise ModelError(
            f"{source} looks like one component of a diffusers model. Pass the diffusers folder "
            "(the one holding model_index.json) instead of a single component file."
        )
    elif _has(keys, "encoder.down.") and _has(keys, "decoder.up."):
        raise ModelError(
            f"{source} is a VAE file, not a full model. Pass it with --vae next to a checkpoint."
        )
    else:
        raise ModelError(
            f"{source}: unknown model architecture (first keys: {sample}). lorakit reads SD1.x, SD2.x "
            "and SDXL checkpoints in the A1111 single-file layout or as diffusers folders."
        )
    return family


def check_unet_input(in_channels: int, source: str) -> None:
    if in_channels == 4:
        return
    kinds = {
        9: "an inpainting model",
        8: "an InstructPix2Pix model",
        5: "a depth-to-image model",
        7: "an upscaler",
    }
    kind = kinds.get(in_channels, f"a model whose U-Net takes {in_channels} input channels")
    raise ModelError(
        f"{source} is {kind}. lorakit trains LoRAs on plain text-to-image models (4 latent channels); "
        "use the matching base model instead."
    )
