"""Preview images during training, from an sd-scripts prompt file, with the network applied.

Previews use the evaluation package's generator (A1111 sampler names, prompts read as A1111
reads them: emphasis, BREAK, any length; the parameters chunk in each PNG) over the model being
trained, without casting or copying it, so a preview matches what A1111 draws from that line. Random state is saved
and restored around them, so previews never change the training run.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .watch import preview_problem

PREVIEW_SEED = 1234  # prompts without --d use seed 1234 + their index, the same every epoch


def load_preview_prompts(path: str | Path):
    from ..evaluation.prompts import load_prompts

    return load_prompts(Path(path))


def make_previews(
    model, network, prompts, config, folder: Path, name: str, label: str
) -> tuple[list[Path], list[str]]:
    """Write one PNG per prompt and a strip of all of them; return (files, warnings)."""
    from dataclasses import replace

    from ..evaluation.generate import GenerationSettings, Generator, settings_for_prompt

    states = (torch.get_rng_state(), np.random.get_state(), random.getstate())
    was_training = network.training
    network.eval()
    folder.mkdir(parents=True, exist_ok=True)
    generator = Generator(model, device=model.unet.device, cast=False, model_name=name)
    defaults = GenerationSettings(
        prompt="", sampler=config.sample_sampler or "ddim", clip_skip=config.clip_skip or 1
    )
    files, images, warnings = [], [], []
    dtype = model.unet.dtype
    autocast = torch.autocast(model.unet.device.type, dtype=dtype, enabled=dtype != torch.float32)
    try:
        for index, spec in enumerate(prompts):
            settings = settings_for_prompt(spec, defaults)
            if spec.seed is None:
                settings = replace(settings, seed=PREVIEW_SEED + index)
            with autocast:
                result = generator(settings)[0]
            path = result.save(folder / f"{name}_{label}_{index:02d}.png")
            files.append(path)
            images.append(result.image)
            problem = preview_problem(np.asarray(result.image))
            if problem:
                warnings.append(
                    f"warning: preview {path.name} is {problem}: the network may have collapsed (NaN). "
                    "Look at the loss; try a lower learning rate, smaller alpha or bf16."
                )
    finally:
        torch.set_rng_state(states[0])
        np.random.set_state(states[1])
        random.setstate(states[2])
        network.train(was_training)
    if images:
        files.append(_strip(images, folder / f"{name}_{label}_strip.png"))
    return files, warnings


def _strip(images: list[Image.Image], path: Path) -> Path:
    """The previews side by side; pictures under MIN_CELL pixels (tiny models) enlarged pixel
    for pixel, as the grids draw them."""
    from ..evaluation.drawing import enlargement
    from ..utils.files import atomic_path

    scale = max(enlargement(*i.size) for i in images)
    images = [i.resize((i.width * scale, i.height * scale), Image.Resampling.NEAREST) for i in images]
    height = max(i.height for i in images)
    strip = Image.new("RGB", (sum(i.width for i in images) + 4 * (len(images) - 1), height), "white")
    x = 0
    for image in images:
        strip.paste(image, (x, 0))
        x += image.width + 4
    with atomic_path(path) as tmp:
        strip.save(tmp, format="PNG")
    return path
