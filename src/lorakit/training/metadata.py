"""The `ss_*` training metadata sd-scripts writes into a LoRA file (all values are strings).

A1111's and ComfyUI's LoRA browsers, civitai and `lorakit inspect` read these keys to show how a
LoRA was trained; the names and formats follow sd-scripts so those tools show lorakit files too.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from typing import Any


def training_metadata(
    config,
    model,
    group,
    plan,
    *,
    session_id: str,
    started_at: float,
    epoch: int,
    step: int,
    model_hash: str | None,
    vae_hash: str | None,
) -> dict[str, str]:
    meta: dict[str, Any] = {
        "ss_session_id": session_id,
        "ss_training_started_at": started_at,
        "ss_training_finished_at": time.time(),
        "ss_output_name": config.output_name,
        "ss_learning_rate": config.learning_rate,
        "ss_text_encoder_lr": config.text_encoder_lr,
        "ss_unet_lr": config.unet_lr,
        "ss_num_train_images": group.num_train_images,
        "ss_num_reg_images": group.num_reg_images,
        "ss_num_batches_per_epoch": plan.batches_per_epoch,
        "ss_num_epochs": plan.epochs,
        "ss_epoch": epoch,
        "ss_steps": step,
        "ss_max_train_steps": plan.total_steps,
        "ss_gradient_checkpointing": config.gradient_checkpointing,
        "ss_gradient_accumulation_steps": config.gradient_accumulation_steps,
        "ss_lr_warmup_steps": config.lr_warmup_steps,
        "ss_lr_scheduler": config.lr_scheduler,
        "ss_optimizer": config.optimizer_type
        + (f"({', '.join(config.optimizer_args)})" if config.optimizer_args else ""),
        "ss_max_grad_norm": config.max_grad_norm,
        "ss_mixed_precision": config.mixed_precision,
        "ss_full_fp16": config.full_fp16,
        "ss_seed": config.seed,
        "ss_clip_skip": config.clip_skip,
        "ss_max_token_length": config.max_token_length,
        "ss_cache_latents": config.cache_latents,
        "ss_caption_dropout_rate": config.caption_dropout_rate,
        "ss_caption_dropout_every_n_epochs": config.caption_dropout_every_n_epochs,
        "ss_caption_tag_dropout_rate": config.caption_tag_dropout_rate,
        "ss_face_crop_aug_range": config.face_crop_aug_range,
        "ss_prior_loss_weight": config.prior_loss_weight,
        "ss_noise_offset": config.noise_offset,
        "ss_noise_offset_random_strength": config.noise_offset_random_strength,
        "ss_adaptive_noise_scale": config.adaptive_noise_scale,
        "ss_multires_noise_iterations": config.multires_noise_iterations,
        "ss_multires_noise_discount": config.multires_noise_discount,
        "ss_ip_noise_gamma": config.ip_noise_gamma,
        "ss_zero_terminal_snr": config.zero_terminal_snr,
        "ss_min_snr_gamma": config.min_snr_gamma,
        "ss_debiased_estimation": config.debiased_estimation_loss,
        "ss_loss_type": config.loss_type,
        "ss_huber_schedule": config.huber_schedule,
        "ss_huber_c": config.huber_c,
        "ss_huber_scale": config.huber_scale,
        "ss_scale_weight_norms": config.scale_weight_norms,
        "ss_training_comment": config.training_comment,
        "ss_sd_model_name": str(config.pretrained_model_name_or_path).replace("\\", "/").split("/")[-1],
        "ss_sd_model_hash": model_hash,
        "ss_new_sd_model_hash": model_hash,
        "ss_vae_name": str(config.vae).replace("\\", "/").split("/")[-1] if config.vae else None,
        "ss_vae_hash": vae_hash,
        "ss_validation_split": config.validation_split,
        "ss_validation_seed": config.validation_seed,
        "ss_tag_frequency": json.dumps(tag_frequency(group), ensure_ascii=False),
        "ss_dataset_dirs": json.dumps(dataset_dirs(group), ensure_ascii=False),
        "ss_bucket_info": json.dumps(
            {"buckets": {f"{w}x{h}": n for (w, h), n in group.bucket_histogram().items()}}
        ),
        "ss_resolution": str(tuple(group.datasets[0].resolution)) if group.datasets else None,
        "ss_batch_size_per_device": config.train_batch_size,
    }
    if config.no_metadata:
        return {}
    return {k: _text(v) for k, v in meta.items() if v is not None}


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, (list, tuple)):
        return json.dumps(value)
    return str(value)


def tag_frequency(group) -> dict[str, dict[str, int]]:
    """{folder: {lowercased tag: count}} over the training images (sd-scripts' ss_tag_frequency)."""
    out: dict[str, Counter] = {}
    for _, _, record in group.records():
        if record.is_reg:
            continue
        folder = record.path.parent.name
        tags = [
            t.strip().lower() for t in str(record.caption or "").replace("\n", ",").split(",") if t.strip()
        ]
        out.setdefault(folder, Counter()).update(tags)
    return {k: dict(v) for k, v in out.items()}


def dataset_dirs(group) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for _, _, record in group.records():
        entry = out.setdefault(record.path.parent.name, {"n_repeats": record.num_repeats, "img_count": 0})
        entry["img_count"] += 1
    return out


def new_session_id() -> str:
    return str(uuid.uuid4().int % 2**31)
