"""One training step and the validation measure: captions -> conditioning, latents, noise,
prediction, weighted loss."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from diffusers import DDPMScheduler

from ..data import Batch, DatasetGroup
from ..data.text_cache import TextOutputCache
from ..models.conditioning import encode, sdxl_time_ids, tokenize
from .loss import LossOptions, training_loss
from .noise import NoiseOptions, noisy_latents, target
from .options import ConfigOptions

VALIDATION_TIMESTEPS = (200, 400, 600, 800)


@dataclass(frozen=True)
class TextOptions(ConfigOptions):
    clip_skip: int | None = None
    max_token_length: int | None = None
    no_token_padding: bool = False


@dataclass(frozen=True)
class ValidationOptions(ConfigOptions):
    validate_every_n_steps: int | None = None
    validate_every_n_epochs: int | None = 1
    max_validation_steps: int | None = None
    validation_seed: int | None = None

    def at_step(self, step: int) -> bool:
        return bool(self.validate_every_n_steps) and step % self.validate_every_n_steps == 0

    def at_epoch(self, epoch: int) -> bool:
        return bool(self.validate_every_n_epochs) and epoch % self.validate_every_n_epochs == 0


@dataclass
class StepContext:
    """What every step needs besides its batch, made once per run."""

    model: object  # StableDiffusionModel
    scheduler: DDPMScheduler
    noise: NoiseOptions
    loss: LossOptions
    text: TextOptions
    generator: torch.Generator
    train_text: bool
    text_cache: TextOutputCache | None = None
    captions: Callable[[list[str]], list[str]] | None = None  # the method's change to captions

    @property
    def unet_dtype(self) -> torch.dtype:
        return self.model.unet.dtype


# -- captions -> text-encoder outputs ---------------------------------------------------------


def text_outputs(model, text: TextOptions):
    """`encode(captions) -> {name: tensor}` for the caption cache, under sd-scripts' names for its
    `_te_outputs.npz` files (SDXL: hidden_state1 / hidden_state2 / pool2)."""

    def run(captions: list[str]) -> dict[str, torch.Tensor]:
        ids = tokenize(model, captions, text.max_token_length, pad=not text.no_token_padding)
        hidden, pooled = encode(model, ids, text.clip_skip)
        if pooled is None:
            return {"hidden_state": hidden}
        width = model.text_encoders[0].config.hidden_size
        return {"hidden_state1": hidden[..., :width], "hidden_state2": hidden[..., width:], "pool2": pooled}

    return run


def _from_outputs(outputs: dict[str, torch.Tensor]):
    if "hidden_state" in outputs:
        return outputs["hidden_state"], None
    return torch.cat([outputs["hidden_state1"], outputs["hidden_state2"]], dim=-1), outputs["pool2"]


def conditioning(model, captions: list[str], text: TextOptions, train_text: bool, cache=None):
    """(hidden states, pooled or None) for `captions`; with gradients when the encoders train,
    from `cache` (a TextOutputCache) when they are frozen and one is given."""
    if train_text or cache is None:
        ids = tokenize(model, captions, text.max_token_length, pad=not text.no_token_padding)
        with nullcontext() if train_text else torch.no_grad():
            return encode(model, ids, text.clip_skip)
    return _from_outputs(cache.lookup(captions))


def _latents(model, batch: Batch, generator):
    vae = model.vae
    if batch.latents is not None:
        latents = batch.latents.to(model.unet.device)  # the VAE may be freed (setup.release_vae)
    else:
        with torch.no_grad():
            images = batch.images.to(vae.device, vae.dtype)
            latents = vae.encode(images).latent_dist.sample(generator)
    return latents * vae.config.scaling_factor


def _added_conditioning(model, batch: Batch, pooled, dtype):
    if not model.family.is_xl:
        return None
    ids = sdxl_time_ids(
        batch.original_sizes_hw.tolist(), batch.crop_top_lefts.tolist(), batch.target_sizes_hw.tolist()
    )
    return {"text_embeds": pooled.to(dtype), "time_ids": ids.to(pooled.device, dtype)}


# -- the step ---------------------------------------------------------------------------------


def step_loss(ctx: StepContext, batch: Batch) -> torch.Tensor:
    """The loss of one batch (a scalar tensor with gradients into the network)."""
    model, dtype = ctx.model, ctx.unet_dtype
    latents = _latents(model, batch, ctx.generator).to(dtype)
    captions = ctx.captions(batch.captions) if ctx.captions else batch.captions
    hidden, pooled = conditioning(model, captions, ctx.text, ctx.train_text, ctx.text_cache)
    noise, noisy, timesteps = noisy_latents(latents.float(), ctx.scheduler, ctx.noise, ctx.generator)
    added = _added_conditioning(model, batch, pooled, dtype)
    pred = model.unet(noisy.to(dtype), timesteps, hidden.to(dtype), added_cond_kwargs=added).sample
    return training_loss(
        pred.float(),
        target(ctx.scheduler, latents.float(), noise, timesteps),
        timesteps,
        ctx.scheduler,
        ctx.loss,
        sample_weights=batch.loss_weights,
        mask=batch.alpha_masks,
    )


def validation_loss(
    ctx: StepContext, group: DatasetGroup | None, options: ValidationOptions, seed: int, runtime
) -> float | None:
    """Mean loss over the held-out images at fixed timesteps with fixed noise: comparable across
    epochs because nothing in it is random from run to run."""
    if group is None:
        return None
    model, dtype = ctx.model, ctx.unet_dtype
    generator = torch.Generator(device="cpu").manual_seed(seed)
    losses = []
    refs = group.epoch_batches(1)
    if options.max_validation_steps:
        refs = refs[: options.max_validation_steps]
    with torch.no_grad(), runtime.autocast():
        for ref in refs:
            batch = group.load_batch(ref)
            latents = _latents(model, batch, generator).float()
            hidden, pooled = conditioning(model, batch.captions, ctx.text, train_text=False)
            for t in VALIDATION_TIMESTEPS:
                timesteps = torch.full((latents.shape[0],), t, dtype=torch.long)
                noise = torch.randn(latents.shape, generator=generator).to(latents)
                noisy = ctx.scheduler.add_noise(latents, noise, timesteps)
                added = _added_conditioning(model, batch, pooled, dtype)
                pred = model.unet(
                    noisy.to(dtype), timesteps.to(latents.device), hidden.to(dtype), added_cond_kwargs=added
                ).sample
                loss = training_loss(
                    pred.float(),
                    target(ctx.scheduler, latents, noise, timesteps),
                    timesteps,
                    ctx.scheduler,
                    ctx.loss,
                )
                losses.append(loss.item())
    return sum(losses) / len(losses) if losses else None


def untrained_loss(ctx: StepContext, group: DatasetGroup, seed: int, runtime) -> float | None:
    """The collapse guard's reference: the loss of the first batch at the fixed validation
    timesteps with fixed noise, all timesteps in one U-Net call. One batched forward instead of
    one per batch and timestep: on a full-size model on a CPU the reference cost several
    training steps' time before the first step."""
    refs = group.epoch_batches(1)[:1]
    if not refs:
        return None
    model, dtype = ctx.model, ctx.unet_dtype
    generator = torch.Generator(device="cpu").manual_seed(seed)
    n = len(VALIDATION_TIMESTEPS)
    with torch.no_grad(), runtime.autocast():
        batch = group.load_batch(refs[0])
        latents = _latents(model, batch, generator).float()
        hidden, pooled = conditioning(model, batch.captions, ctx.text, train_text=False)
        b = latents.shape[0]
        timesteps = torch.tensor(VALIDATION_TIMESTEPS, dtype=torch.long).repeat_interleave(b)
        noise = torch.cat([torch.randn(latents.shape, generator=generator).to(latents) for _ in range(n)])
        latents = latents.repeat(n, *[1] * (latents.dim() - 1))
        added = _added_conditioning(model, batch, pooled, dtype)
        if added is not None:
            added = {k: v.repeat(n, *[1] * (v.dim() - 1)) for k, v in added.items()}
        pred = model.unet(
            ctx.scheduler.add_noise(latents, noise, timesteps).to(dtype),
            timesteps.to(latents.device),
            hidden.repeat(n, 1, 1).to(dtype),
            added_cond_kwargs=added,
        ).sample
        loss = training_loss(
            pred.float(), target(ctx.scheduler, latents, noise, timesteps), timesteps, ctx.scheduler, ctx.loss
        )
    return loss.item()
