"""The optimizer and learning-rate schedule names users type (sd-scripts'), in one table read by
the option checks (a typo fails when the config is read) and by `optim` (which builds them)."""

from __future__ import annotations

from typing import Any

# name (lower case) -> (module, class, extra defaults)
OPTIMIZERS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "adamw": ("torch.optim", "AdamW", {}),
    "adamw8bit": ("bitsandbytes.optim", "AdamW8bit", {}),
    "pagedadamw": ("bitsandbytes.optim", "PagedAdamW", {}),
    "pagedadamw8bit": ("bitsandbytes.optim", "PagedAdamW8bit", {}),
    "pagedadamw32bit": ("bitsandbytes.optim", "PagedAdamW32bit", {}),
    "lion": ("lion_pytorch", "Lion", {}),
    "lion8bit": ("bitsandbytes.optim", "Lion8bit", {}),
    "pagedlion8bit": ("bitsandbytes.optim", "PagedLion8bit", {}),
    "sgdnesterov": ("torch.optim", "SGD", {"nesterov": True, "momentum": 0.9}),
    "sgdnesterov8bit": ("bitsandbytes.optim", "SGD8bit", {"nesterov": True, "momentum": 0.9}),
    "dadaptation": ("dadaptation.experimental", "DAdaptAdamPreprint", {}),
    "dadaptadampreprint": ("dadaptation.experimental", "DAdaptAdamPreprint", {}),
    "dadaptadam": ("dadaptation", "DAdaptAdam", {}),
    "dadaptadagrad": ("dadaptation", "DAdaptAdaGrad", {}),
    "dadaptadan": ("dadaptation", "DAdaptAdan", {}),
    "dadaptadanip": ("dadaptation.experimental", "DAdaptAdanIP", {}),
    "dadaptlion": ("dadaptation", "DAdaptLion", {}),
    "dadaptsgd": ("dadaptation", "DAdaptSGD", {}),
    "prodigy": ("prodigyopt", "Prodigy", {}),
    "adafactor": ("transformers.optimization", "Adafactor", {}),
    "adamwschedulefree": ("schedulefree", "AdamWScheduleFree", {}),
    "radamschedulefree": ("schedulefree", "RAdamScheduleFree", {}),
    "sgdschedulefree": ("schedulefree", "SGDScheduleFree", {}),
}

PACKAGES = {
    "bitsandbytes": "bitsandbytes (8-bit optimizers need an NVIDIA GPU)",
    "lion_pytorch": "lion-pytorch",
    "dadaptation": "dadaptation",
    "prodigyopt": "prodigyopt",
    "schedulefree": "schedulefree",
}


def is_adaptive(name: str) -> bool:
    """Optimizers that find their own step size (lr ~ 1.0): DAdaptation family and Prodigy."""
    lower = name.lower()
    return lower.startswith("dadapt") or lower.startswith("prodigy")


def is_schedule_free(name: str) -> bool:
    return name.lower().endswith("schedulefree")


SCHEDULES = (
    "constant",
    "constant_with_warmup",
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "piecewise_constant",
    "inverse_sqrt",
    "cosine_with_min_lr",
    "warmup_stable_decay",
    "adafactor",
)
