"""Stable Diffusion checkpoints as users have them: read (single file in the A1111 layout or a
diffusers folder, no network access), described, converted and saved.

Layout: `families` tells SD1/SD2/SDXL apart from the keys; `checkpoint_file` reads tensors
(safetensors, or pickles through `safe_pickle`); `ldm` maps the original key names to diffusers';
`load` builds the components; `model` is the loaded `StableDiffusionModel`; `conditioning`
turns captions into text-encoder outputs; `save` writes files; `report` describes a checkpoint
for `lorakit inspect`; `tiny` makes random tiny models for tests.

Importing it drops the diffusers/transformers messages that say nothing to a user
(`lorakit.utils.quiet`), for every caller of the library, not only the command line.
"""

from ..utils.quiet import quiet_third_party
from .families import FAMILIES, SD1, SD2, SDXL, Family
from .load import load_model, load_structure, load_vae
from .model import StableDiffusionModel
from .report import checkpoint_report, format_report
from .save import save_diffusers, save_single_file

quiet_third_party()

__all__ = [
    "FAMILIES",
    "SD1",
    "SD2",
    "SDXL",
    "Family",
    "StableDiffusionModel",
    "checkpoint_report",
    "format_report",
    "load_model",
    "load_structure",
    "load_vae",
    "save_diffusers",
    "save_single_file",
]
