"""Evaluation: images from a base model plus LoRA files, and X/Y/Z grids to pick the best epoch
and weight. Modules: `samplers` (A1111 names -> diffusers schedulers), `prompts` (sd-scripts
prompt files, `<lora:...>` tags), `pngmeta` (A1111 "parameters" chunk), `generate` (one pipeline
per model), `grid` (axes, cells; `lorakit grid --run` reads the run through `lorakit.runs`), `drawing`
(the labelled PNG), `networks_adapter` (the only use of `lorakit.networks`). Prompts become
conditioning in `lorakit.models.prompt_conditioning` (A1111's emphasis, chunks and weighting)."""

from .generate import (
    GeneratedImage,
    GenerationSettings,
    Generator,
    open_generator,
    save_images,
    settings_for_prompt,
)
from .grid import Axis, GridResult, make_axis, parse_axis, run_axes, run_grid
from .pngmeta import GenerationParameters, format_parameters, parse_parameters, read_parameters
from .prompts import LoraRef, PromptSpec, extract_lora_tags, load_prompts, parse_prompt_line
from .samplers import SAMPLERS, Sampler, find_sampler, make_scheduler

__all__ = [
    "SAMPLERS",
    "Axis",
    "GeneratedImage",
    "GenerationParameters",
    "GenerationSettings",
    "Generator",
    "GridResult",
    "LoraRef",
    "PromptSpec",
    "Sampler",
    "extract_lora_tags",
    "find_sampler",
    "format_parameters",
    "load_prompts",
    "make_axis",
    "make_scheduler",
    "open_generator",
    "parse_axis",
    "parse_parameters",
    "parse_prompt_line",
    "read_parameters",
    "run_axes",
    "run_grid",
    "save_images",
    "settings_for_prompt",
]
