"""Noise, timesteps and noisy latents for one training step (the sd-scripts recipe).

All randomness comes from the `generator` passed in, so a resumed run draws the same numbers as
an uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler

from .options import ConfigOptions


@dataclass(frozen=True)
class NoiseOptions(ConfigOptions):
    noise_offset: float | None = None
    noise_offset_random_strength: bool = False
    adaptive_noise_scale: float | None = None
    multires_noise_iterations: int | None = None
    multires_noise_discount: float = 0.3
    ip_noise_gamma: float | None = None
    ip_noise_gamma_random_strength: bool = False
    min_timestep: int | None = None
    max_timestep: int | None = None


def _randn(shape, like: torch.Tensor, generator) -> torch.Tensor:
    return torch.randn(shape, generator=generator, device=generator.device if generator else "cpu").to(like)


def _rand(like: torch.Tensor, generator) -> torch.Tensor:
    return torch.rand(1, generator=generator, device=generator.device if generator else "cpu").to(like)


def apply_noise_offset(latents, noise, offset, adaptive_scale, generator):
    """noise + offset·N(0,1) per image and channel, so the model can shift overall brightness.
    With `adaptive_scale` the offset grows with the latent's mean (clamped at 0)."""
    if adaptive_scale is not None:
        offset = (offset + adaptive_scale * latents.mean(dim=(2, 3), keepdim=True).abs()).clamp(min=0.0)
    return noise + offset * _randn((latents.shape[0], latents.shape[1], 1, 1), latents, generator)


def pyramid_noise(noise, iterations, discount, generator):
    """Multi-resolution noise: coarse random fields at scales r^i (r in [2, 4)) weighted by
    discount^i, added up and renormalised to unit std."""
    b, c, h, w = noise.shape
    noise = noise.clone()
    for i in range(iterations):
        r = _rand(noise, generator).item() * 2 + 2
        hn, wn = max(1, int(h / (r**i))), max(1, int(w / (r**i)))
        coarse = _randn((b, c, hn, wn), noise, generator)
        noise += F.interpolate(coarse, size=(h, w), mode="bilinear") * discount**i
        if hn == 1 or wn == 1:
            break
    return noise / noise.std()


def noisy_latents(
    latents: torch.Tensor,
    scheduler: DDPMScheduler,
    options: NoiseOptions,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(noise, noisy latents, timesteps). The target is built from `noise`; with ip_noise_gamma
    the input gets extra noise that the target does not include (input perturbation)."""
    noise = _randn(latents.shape, latents, generator)
    if options.noise_offset:
        offset = options.noise_offset
        if options.noise_offset_random_strength:
            offset = _rand(latents, generator) * offset
        noise = apply_noise_offset(latents, noise, offset, options.adaptive_noise_scale, generator)
    if options.multires_noise_iterations:
        noise = pyramid_noise(
            noise, options.multires_noise_iterations, options.multires_noise_discount, generator
        )

    low = options.min_timestep or 0
    high = options.max_timestep or scheduler.config.num_train_timesteps
    timesteps = torch.randint(
        low, high, (latents.shape[0],), generator=generator, device=generator.device if generator else "cpu"
    )
    timesteps = timesteps.to(latents.device)

    if options.ip_noise_gamma:
        gamma = options.ip_noise_gamma
        if options.ip_noise_gamma_random_strength:
            gamma = _rand(latents, generator) * gamma
        perturbed = noise + gamma * _randn(latents.shape, latents, generator)
        return noise, scheduler.add_noise(latents, perturbed, timesteps), timesteps
    return noise, scheduler.add_noise(latents, noise, timesteps), timesteps


def training_scheduler(model, zero_terminal_snr: bool = False) -> DDPMScheduler:
    """The DDPM scaled-linear schedule of the model (epsilon or v), optionally rescaled so the last
    step has zero SNR (pure noise), as the 'flawed schedules' paper and sd-scripts do it."""
    settings = model.family.config("scheduler")
    settings.update(prediction_type=model.prediction_type, rescale_betas_zero_snr=zero_terminal_snr)
    return DDPMScheduler.from_config(settings)


def target(scheduler: DDPMScheduler, latents, noise, timesteps) -> torch.Tensor:
    if scheduler.config.prediction_type == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)
    return noise
