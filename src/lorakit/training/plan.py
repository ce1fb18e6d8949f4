"""The step arithmetic and the checks printed before the first step.

Users reason with `steps = images × repeats × epochs / batch size`; the plan shows that formula
with their numbers next to the exact count (buckets round up per bucket, gradient accumulation and
several GPUs divide it), so a surprising total is visible before an hour is spent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .names import is_adaptive


@dataclass
class StepPlan:
    batches_per_epoch: int  # batches of one process... before accumulation, all processes together
    batch_size: int
    gradient_accumulation_steps: int
    num_processes: int
    steps_per_epoch: int  # optimizer steps
    epochs: int
    total_steps: int
    samples_per_epoch: int  # images x repeats (+ looped regularization images)
    warnings: list[str] = field(default_factory=list)


def plan_steps(
    batches_per_epoch: int,
    samples_per_epoch: int,
    batch_size: int,
    max_train_steps: int,
    max_train_epochs: int | None,
    gradient_accumulation_steps: int = 1,
    num_processes: int = 1,
) -> StepPlan:
    per_process = math.ceil(batches_per_epoch / num_processes)
    steps_per_epoch = max(1, math.ceil(per_process / gradient_accumulation_steps))
    if max_train_epochs:
        epochs = max_train_epochs
        total = epochs * steps_per_epoch
    else:
        total = max_train_steps
        epochs = math.ceil(total / steps_per_epoch)
    return StepPlan(
        batches_per_epoch,
        batch_size,
        gradient_accumulation_steps,
        num_processes,
        steps_per_epoch,
        epochs,
        total,
        samples_per_epoch,
    )


def format_steps(plan: StepPlan) -> list[str]:
    effective = plan.batch_size * plan.gradient_accumulation_steps * plan.num_processes
    lines = [
        f"steps per epoch:  {plan.steps_per_epoch}"
        + (
            f" ({plan.batches_per_epoch} batches"
            + (f" / {plan.num_processes} processes" if plan.num_processes > 1 else "")
            + (
                f" / {plan.gradient_accumulation_steps} accumulated"
                if plan.gradient_accumulation_steps > 1
                else ""
            )
            + ")"
        ),
        f"epochs:           {plan.epochs}",
        f"total steps:      {plan.total_steps}   "
        f"(images x repeats x epochs / batch = {plan.samples_per_epoch} x {plan.epochs} / {effective} "
        f"= {math.ceil(plan.samples_per_epoch * plan.epochs / effective)}; buckets round up per bucket)",
    ]
    return lines


def check_settings(
    config, plan: StepPlan, family_is_xl: bool, train_images: int, optimizer_notes: list[str]
) -> list[str]:
    """Settings that are allowed but usually a mistake, each with what to do."""
    warnings = list(optimizer_notes)
    dim, alpha = config.network_dim, config.network_alpha
    if alpha is not None and dim and alpha > dim:
        warnings.append(
            f"network_alpha ({alpha:g}) is larger than network_dim ({dim}): the LoRA's effect is multiplied by "
            f"{alpha / dim:g}, like a {alpha / dim:g}x learning rate. Usually alpha <= dim."
        )
    lr = config.unet_lr or config.learning_rate
    if not is_adaptive(config.optimizer_type) and lr and lr >= 1e-2:
        warnings.append(
            f"learning rate {lr:g} is very high for {config.optimizer_type}; LoRA usually uses 1e-4 to 5e-4."
        )
    if config.mixed_precision == "fp16" and family_is_xl and not config.no_half_vae:
        warnings.append(
            "fp16 with the SDXL VAE gives NaN (black images). lorakit keeps the VAE in fp32 for you; set "
            "no_half_vae = true to make it explicit, or use bf16."
        )
    if train_images and train_images < 50 and plan.total_steps > 10_000:
        warnings.append(
            f"{plan.total_steps} steps for {train_images} images is a lot: LoRAs usually overfit after "
            "1500-4000 steps. Lower repeats or epochs."
        )
    if config.network_train_unet_only and config.network_train_text_encoder_only:
        warnings.append(
            "network_train_unet_only and network_train_text_encoder_only are both set; nothing would train."
        )
    if config.clip_skip and config.clip_skip > 1 and family_is_xl:
        warnings.append("clip_skip is ignored for SDXL (it always uses the penultimate layer).")
    if config.cache_latents and (config.color_aug or config.random_crop):
        warnings.append("color_aug and random_crop change every epoch and cannot be used with cache_latents.")
    saves = config.save_every_n_epochs or config.save_every_n_steps
    if not saves and plan.epochs > 1:
        warnings.append("no save_every_n_epochs: only the final LoRA is saved, so you cannot compare epochs.")
    return warnings


def estimate_memory_gb(
    base_params: int,
    base_bytes_per_param: int,
    trainable: int,
    batch: int,
    resolution: int,
    checkpointing: bool,
) -> float:
    """A rough figure (weights, gradients, Adam state, activations) to spot an impossible setup."""
    weights = base_params * base_bytes_per_param
    training = trainable * (4 + 4 + 8)
    pixels = batch * (resolution / 512) ** 2
    activations = (1.5 if checkpointing else 6.0) * 1024**3 * pixels
    return (weights + training + activations) / 1024**3
