"""The quickstart's sampler: many pictures of the tiny base model at once, one per (prompt, seed).

A thin face over `evaluation.Generator.draw` with the settings the quickstart's scores were
tuned with (DPM-Solver++ 2M, trailing timesteps, 12 steps, guidance 5, plain prompts). Each
image's starting noise comes from a CPU generator seeded with that image's seed, so an image
depends only on (prompt, seed, settings, weights), not on the batch it was made in.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from diffusers import DPMSolverMultistepScheduler
from PIL import Image

from ..evaluation.generate import GenerationSettings, Generator
from ..evaluation.prompts import LoraRef
from ..models.model import StableDiffusionModel

STEPS = 12
CFG = 5.0


def generate(
    model: StableDiffusionModel,
    prompts: Sequence[str],
    seeds: Sequence[int],
    steps: int = STEPS,
    cfg: float = CFG,
    negative: str = "",
    size: int | None = None,
    loras: Sequence[tuple[str | Path, float]] = (),
    batch: int = 64,
) -> list[Image.Image]:
    """One image per (prompt, seed) pair, `batch` at a time. `loras`: [(file, weight)] merged
    while sampling and taken out after, bit for bit."""
    if len(prompts) != len(seeds):
        raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds: give one seed per prompt")
    settings = GenerationSettings(
        prompt="", negative_prompt=negative, steps=steps, cfg=cfg, width=size, height=size,
        loras=[LoraRef(Path(path), weight) for path, weight in loras], prompt_style="plain",
    )  # fmt: skip
    scheduler = DPMSolverMultistepScheduler.from_config(
        model.noise_scheduler().config, algorithm_type="dpmsolver++", solver_order=2, timestep_spacing="trailing"
    )
    generator = Generator(model, device=model.unet.device, cast=False)
    try:
        images: list[Image.Image] = []
        for start in range(0, len(prompts), batch):
            part = slice(start, start + batch)
            images += generator.draw(settings, prompts[part], seeds[part], scheduler)
        return images
    finally:
        generator.close()
