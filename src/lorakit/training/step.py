"""One training step and the validation measure: captions -> conditioning, latents, noise,
prediction, weighted loss."""

from __future__ import annotations

from contextlib import nullcontext

import torch

from .loss import training_loss
from .noise import noisy_latents, target

VALIDATION_TIMESTEPS = (200, 400, 600, 800)


class TextCache:
    """Encoded captions, kept while the text encoders are frozen: a caption seen before (every
    repeat of every epoch without shuffling) is not encoded again. Bounded, oldest dropped first."""

    def __init__(self, size: int = 4096):
        from collections import OrderedDict

        self.size, self.items, self.hits = size, OrderedDict(), 0

    def get(self, caption: str):
        if caption in self.items:
            self.items.move_to_end(caption)
            self.hits += 1
            return self.items[caption]
        return None

    def put(self, caption: str, value) -> None:
        self.items[caption] = value
        if len(self.items) > self.size:
            self.items.popitem(last=False)


def conditioning(model, captions, config, train_text: bool, cache: TextCache | None = None):
    from ..models.conditioning import encode, tokenize

    if train_text or cache is None:
        ids = tokenize(model, captions, config.max_token_length)
        with nullcontext() if train_text else torch.no_grad():
            return encode(model, ids, config.clip_skip)
    missing = [c for c in dict.fromkeys(captions) if cache.get(c) is None]
    if missing:
        with torch.no_grad():
            hidden, pooled = encode(
                model, tokenize(model, missing, config.max_token_length), config.clip_skip
            )
        for i, caption in enumerate(missing):
            cache.put(caption, (hidden[i], None if pooled is None else pooled[i]))
    rows = [cache.get(c) for c in captions]
    hidden = torch.stack([r[0] for r in rows])
    pooled = None if rows[0][1] is None else torch.stack([r[1] for r in rows])
    return hidden, pooled


def _latents(model, batch, generator):
    vae = model.vae
    if batch.latents is not None:
        latents = batch.latents.to(vae.device)
    else:
        with torch.no_grad():
            images = batch.images.to(vae.device, vae.dtype)
            latents = vae.encode(images).latent_dist.sample(generator)
    return latents * vae.config.scaling_factor


def _added_conditioning(model, batch, pooled, dtype):
    if not model.family.is_xl:
        return None
    from ..models.conditioning import sdxl_time_ids

    ids = sdxl_time_ids(
        batch.original_sizes_hw.tolist(), batch.crop_top_lefts.tolist(), batch.target_sizes_hw.tolist()
    )
    return {"text_embeds": pooled.to(dtype), "time_ids": ids.to(pooled.device, dtype)}


def step_loss(
    model,
    network,
    batch,
    scheduler,
    noise_options,
    loss_options,
    config,
    generator,
    train_text,
    unet_dtype,
    text_cache=None,
):
    """The loss of one batch (a scalar tensor with gradients into the network)."""
    latents = _latents(model, batch, generator).to(unet_dtype)
    hidden, pooled = conditioning(model, batch.captions, config, train_text, text_cache)
    noise, noisy, timesteps = noisy_latents(latents.float(), scheduler, noise_options, generator)
    added = _added_conditioning(model, batch, pooled, unet_dtype)
    pred = model.unet(noisy.to(unet_dtype), timesteps, hidden.to(unet_dtype), added_cond_kwargs=added).sample
    mask = batch.alpha_masks if batch.alpha_masks is not None else None
    return training_loss(
        pred.float(),
        target(scheduler, latents.float(), noise, timesteps),
        timesteps,
        scheduler,
        loss_options,
        sample_weights=batch.loss_weights,
        mask=mask,
    )


def validation_loss(model, group, scheduler, config, loss_options, seed, accelerator) -> float | None:
    """Mean loss over the held-out images at fixed timesteps with fixed noise: comparable across
    epochs because nothing in it is random from run to run."""
    if group is None:
        return None
    generator = torch.Generator(device="cpu").manual_seed(seed)
    losses = []
    refs = group.epoch_batches(1)
    if config.max_validation_steps:
        refs = refs[: config.max_validation_steps]
    unet_dtype = model.unet.dtype
    with torch.no_grad(), accelerator.autocast():
        for ref in refs:
            batch = group.load_batch(ref)
            latents = _latents(model, batch, generator).float()
            hidden, pooled = conditioning(model, batch.captions, config, train_text=False)
            for t in VALIDATION_TIMESTEPS:
                timesteps = torch.full((latents.shape[0],), t, dtype=torch.long)
                noise = torch.randn(latents.shape, generator=generator).to(latents)
                noisy = scheduler.add_noise(latents, noise, timesteps)
                added = _added_conditioning(model, batch, pooled, unet_dtype)
                pred = model.unet(
                    noisy.to(unet_dtype),
                    timesteps.to(latents.device),
                    hidden.to(unet_dtype),
                    added_cond_kwargs=added,
                ).sample
                losses.append(
                    training_loss(
                        pred.float(),
                        target(scheduler, latents, noise, timesteps),
                        timesteps,
                        scheduler,
                        loss_options,
                    ).item()
                )
    return sum(losses) / len(losses) if losses else None
