"""What the training form is made of: the option table (names, kinds, defaults, sections and the
English help), the Chinese help beside it (`option_help_zh.json`, keyed by option name), which
options come first, and the values some options choose from."""

from __future__ import annotations

import functools
import json
from pathlib import Path

from ..evaluation.samplers import sampler_names
from ..training.names import SCHEDULES
from ..training.options import (
    HYPERNETWORK_ACTIVATIONS,
    HYPERNETWORK_INITS,
    OPTIONS,
    SECTIONS,
    TRAINING_TYPES,
)

HELP_ZH_FILE = Path(__file__).with_name("option_help_zh.json")

# Shown first in each section, in this order; every other option is under "advanced".
COMMON = (
    "pretrained_model_name_or_path",
    "training_type",
    "token_string",
    "class_prompt",
    "clip_skip",
    "train_data_dir",
    "reg_data_dir",
    "caption_extension",
    "resolution",
    "enable_bucket",
    "train_batch_size",
    "shuffle_caption",
    "keep_tokens",
    "flip_aug",
    "validation_split",
    "cache_latents",
    "network_dim",
    "network_alpha",
    "unet_lr",
    "text_encoder_lr",
    "network_train_unet_only",
    "optimizer_type",
    "learning_rate",
    "lr_scheduler",
    "lr_warmup_steps",
    "max_train_epochs",
    "mixed_precision",
    "gradient_checkpointing",
    "min_snr_gamma",
    "seed",
    "sample_prompts",
    "sample_every_n_epochs",
    "sample_sampler",
    "output_name",
    "save_every_n_epochs",
    "save_precision",
    "save_state",
)

# Options whose value is one of a few words (a select), or usually one of them (suggestions).
CHOICES = {
    "mixed_precision": ["no", "fp16", "bf16"],
    "save_precision": ["float", "fp16", "bf16"],
    "save_model_as": ["safetensors", "ckpt", "pt", "diffusers"],
    "training_type": list(TRAINING_TYPES),
    "hypernetwork_activation_func": list(HYPERNETWORK_ACTIVATIONS),
    "hypernetwork_weight_init": list(HYPERNETWORK_INITS),
    "loss_type": ["l2", "l1", "huber", "smooth_l1"],
    "huber_schedule": ["constant", "exponential", "snr"],
    "log_with": ["tensorboard", "none"],
    "lr_scheduler": list(SCHEDULES),
    "resize_interpolation": ["lanczos", "nearest", "bilinear", "bicubic", "area"],
    "console_log_level": ["DEBUG", "INFO", "WARNING", "ERROR"],
}
SUGGESTIONS = {
    "optimizer_type": [
        "AdamW", "AdamW8bit", "PagedAdamW8bit", "Lion", "Lion8bit", "SGDNesterov", "DAdaptation",
        "DAdaptAdam", "Prodigy", "AdaFactor", "AdamWScheduleFree", "RAdamScheduleFree",
    ],
    "network_module": ["networks.lora", "networks.dylora", "lycoris.kohya"],
    "sample_sampler": sampler_names(),
    "resolution": ["512", "768", "1024", "512,768"],
}  # fmt: skip


@functools.cache
def help_zh() -> dict[str, str]:
    return json.loads(HELP_ZH_FILE.read_text(encoding="utf-8"))


def form_options() -> dict:
    """The option table as the form reads it (also `GET /api/options`)."""
    zh = help_zh()
    rank = {name: i for i, name in enumerate(COMMON)}
    return {
        "sections": list(SECTIONS),
        "options": [
            {
                "name": o.name,
                "default": o.default,
                "kind": o.kind,
                "section": o.section,
                "help": o.help,
                "help_zh": zh.get(o.name, ""),
                "common": o.name in rank,
                "rank": rank.get(o.name),
                "choices": CHOICES.get(o.name),
                "suggestions": SUGGESTIONS.get(o.name),
            }
            for o in OPTIONS
        ],
    }


def missing_help() -> dict[str, list[str]]:
    """Options without help in a language, and catalogue entries that name no option."""
    zh = help_zh()
    names = {o.name for o in OPTIONS}
    return {
        "en": sorted(o.name for o in OPTIONS if not o.help.strip()),
        "zh": sorted(n for n in names if not zh.get(n, "").strip()),
        "unknown": sorted(set(zh) - names),
    }
