"""A small text-to-image sampler for the tiny base model (and any SD1/SD2 model).

Built on the model's own components, so it needs no pipeline object: the quickstart's previews
and grid and the concept tests use it. Each image's starting noise comes from a CPU generator
seeded with that image's seed, so an image depends only on (prompt, seed, settings, weights),
not on the batch it was made in. Classifier-free guidance as in Stable Diffusion: the empty
prompt is the unconditional side.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from diffusers import DPMSolverMultistepScheduler
from PIL import Image

from ..models.conditioning import encode, tokenize
from ..models.model import StableDiffusionModel
from ..networks import applied

STEPS = 12
CFG = 5.0


def latent_factor(model: StableDiffusionModel) -> int:
    """How many image pixels one latent pixel covers along a side (8 for real SD models)."""
    return 2 ** (len(model.vae.config.block_out_channels) - 1)


@torch.no_grad()
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
    """One image per (prompt, seed) pair. `loras`: [(file, weight)] merged while sampling and
    restored after, bit for bit."""
    if model.family.is_xl:
        raise ValueError("this sampler draws SD1/SD2 models; use `lorakit generate` for SDXL")
    if len(prompts) != len(seeds):
        raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds: give one seed per prompt")
    if loras:
        context = applied(model, [(str(path), weight) for path, weight in loras])
    else:
        context = nullcontext()
    with context:
        images: list[Image.Image] = []
        for start in range(0, len(prompts), batch):
            images += _generate(
                model,
                prompts[start : start + batch],
                seeds[start : start + batch],
                steps,
                cfg,
                negative,
                size,
            )
    return images


def _generate(model, prompts, seeds, steps, cfg, negative, size) -> list[Image.Image]:
    unet, vae = model.unet, model.vae
    device, dtype = unet.device, unet.dtype
    side = (size or model.resolution) // latent_factor(model)
    noise = torch.stack(
        [
            torch.randn(
                (unet.config.in_channels, side, side), generator=torch.Generator().manual_seed(int(s))
            )
            for s in seeds
        ]
    )
    texts = list(prompts) + ([negative] if cfg != 1.0 else [])
    hidden, _ = encode(model, tokenize(model, texts))
    hidden = hidden.to(device, dtype)
    cond = hidden[: len(prompts)]
    uncond = hidden[len(prompts) :].expand(len(prompts), -1, -1) if cfg != 1.0 else None
    scheduler = DPMSolverMultistepScheduler.from_config(
        model.noise_scheduler().config,
        algorithm_type="dpmsolver++",
        solver_order=2,
        timestep_spacing="trailing",
    )
    scheduler.set_timesteps(steps)
    latents = noise.to(device, torch.float32) * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        x = scheduler.scale_model_input(latents, t).to(dtype)
        if cfg != 1.0:
            both = unet(torch.cat([x, x]), t, torch.cat([cond, uncond])).sample.float()
            c, u = both.chunk(2)
            pred = u + cfg * (c - u)
        else:
            pred = unet(x, t, cond).sample.float()
        latents = scheduler.step(pred, t, latents).prev_sample
    decoded = vae.decode((latents / vae.config.scaling_factor).to(vae.dtype)).sample.float()
    pixels = ((decoded.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(np.ascontiguousarray(p)) for p in pixels]
