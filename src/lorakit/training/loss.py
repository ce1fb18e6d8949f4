"""The training loss: per-element loss type, then per-sample weights (SNR tricks, prior loss
weight, masks), as sd-scripts computes them, so the same settings train the same way."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .options import ConfigOptions


@dataclass(frozen=True)
class LossOptions(ConfigOptions):
    loss_type: str = "l2"
    huber_schedule: str = "snr"
    huber_c: float = 0.1
    huber_scale: float = 1.0
    min_snr_gamma: float | None = None
    debiased_estimation_loss: bool = False
    scale_v_pred_loss_like_noise_pred: bool = False
    v_pred_like_loss: float | None = None


def snr(scheduler, timesteps: torch.Tensor) -> torch.Tensor:
    """Signal-to-noise ratio alpha_bar / (1 - alpha_bar) at each timestep."""
    alphas = scheduler.alphas_cumprod.to(timesteps.device)[timesteps].float()
    # a zero-terminal-SNR schedule has alpha_bar = 0 at its last step; keep the weights finite
    return (alphas / (1.0 - alphas)).clamp(min=1e-8)


def huber_c(options: LossOptions, scheduler, timesteps: torch.Tensor) -> torch.Tensor | None:
    if options.loss_type not in ("huber", "smooth_l1"):
        return None
    steps = scheduler.config.num_train_timesteps
    if options.huber_schedule == "constant":
        c = torch.full(timesteps.shape, options.huber_c)
    elif options.huber_schedule == "exponential":
        alpha = -math.log(options.huber_c) / steps
        c = torch.exp(-alpha * timesteps.float())
    elif options.huber_schedule == "snr":
        alphas = scheduler.alphas_cumprod.to(timesteps.device)[timesteps].float()
        sigmas = ((1.0 - alphas) / alphas) ** 0.5
        c = (1 - options.huber_c) / (1 + sigmas) ** 2 + options.huber_c
    else:
        raise ValueError(f"huber_schedule must be constant, exponential or snr, got {options.huber_schedule}")
    return (c * options.huber_scale).to(timesteps.device)


def elementwise(
    pred: torch.Tensor, target: torch.Tensor, loss_type: str, c: torch.Tensor | None
) -> torch.Tensor:
    if loss_type == "l2":
        return F.mse_loss(pred, target, reduction="none")
    if loss_type == "l1":
        return F.l1_loss(pred, target, reduction="none")
    c = c.view(-1, *([1] * (pred.dim() - 1)))
    root = torch.sqrt((pred - target) ** 2 + c**2) - c
    if loss_type == "huber":
        return 2 * c * root
    if loss_type == "smooth_l1":
        return 2 * root
    raise ValueError(f"unknown loss_type {loss_type}")


def snr_weight(options: LossOptions, scheduler, timesteps: torch.Tensor, v_prediction: bool) -> torch.Tensor:
    """Per-sample multiplier from min-SNR, debiased estimation and the v-prediction options."""
    s = snr(scheduler, timesteps)
    weight = torch.ones_like(s)
    if options.min_snr_gamma:
        clipped = torch.minimum(s, torch.full_like(s, options.min_snr_gamma))
        weight = weight * (clipped / (s + 1) if v_prediction else clipped / s)
    if options.scale_v_pred_loss_like_noise_pred:
        capped = torch.clamp(s, max=1000)
        weight = weight * capped / (capped + 1)
    if options.v_pred_like_loss:
        capped = torch.clamp(s, max=1000)
        weight = weight * (1 + options.v_pred_like_loss * (capped + 1) / capped)
    if options.debiased_estimation_loss:
        capped = torch.clamp(s, max=1000)
        weight = weight * (1 / (capped + 1) if v_prediction else 1 / torch.sqrt(capped))
    return weight


def training_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    timesteps: torch.Tensor,
    scheduler,
    options: LossOptions,
    sample_weights: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean loss of the batch. `sample_weights` carries prior_loss_weight for regularization
    images; `mask` (B,1,H,W in image or latent size) limits the loss to the masked area."""
    loss = elementwise(
        pred.float(), target.float(), options.loss_type, huber_c(options, scheduler, timesteps)
    )
    if mask is not None:
        loss = loss * F.interpolate(mask.float(), size=loss.shape[2:], mode="area")
    loss = loss.mean(dim=list(range(1, loss.dim())))
    loss = loss * snr_weight(
        options, scheduler, timesteps, scheduler.config.prediction_type == "v_prediction"
    )
    if sample_weights is not None:
        loss = loss * sample_weights.to(loss)
    return loss.mean()
