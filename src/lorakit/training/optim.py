"""Optimizers and learning-rate schedules by their sd-scripts names.

Every optimizer comes from a maintained package (torch, bitsandbytes, lion-pytorch, dadaptation,
prodigyopt, schedulefree, transformers); this module only maps names, fills sd-scripts' defaults
and explains the quirks users trip on.
"""

from __future__ import annotations

import importlib
import logging
import math
from dataclasses import dataclass
from typing import Any

import torch
from diffusers.optimization import get_scheduler
from transformers.optimization import AdafactorSchedule

from ..errors import ConfigError
from ..utils.keyvalue import parse_key_values, parse_literal
from ..utils.suggest import did_you_mean
from .names import OPTIMIZERS, PACKAGES, SCHEDULES, is_adaptive, is_schedule_free
from .options import ConfigOptions

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UpdateOptions(ConfigOptions):
    """How gradients become an optimizer step."""

    gradient_accumulation_steps: int = 1
    max_grad_norm: float | None = 1.0
    scale_weight_norms: float | None = None
    fused_backward_pass: bool = False


@dataclass
class OptimizerSetup:
    optimizer: torch.optim.Optimizer
    name: str
    notes: list[str]  # plain-words notes printed in the plan (quirks, forced settings)
    relative_step: bool = False  # Adafactor chooses its own lr; the schedule must be "adafactor"


def create_optimizer(name: str, param_groups: list[dict], lr: float, args: dict[str, Any]) -> OptimizerSetup:
    key = name.lower()
    notes: list[str] = []
    if "." in name and key not in OPTIMIZERS:
        module_name, _, class_name = name.rpartition(".")
        cls = _import(module_name, class_name, name)
        return OptimizerSetup(cls(param_groups, lr=lr, **args), name, notes)
    if key not in OPTIMIZERS:
        raise ConfigError(
            f"unknown optimizer_type '{name}'.{did_you_mean(key, OPTIMIZERS)} Known: "
            + ", ".join(sorted(OPTIMIZERS))
            + ", or a class path such as bitsandbytes.optim.AdEMAMix8bit."
        )
    module_name, class_name, defaults = OPTIMIZERS[key]
    cls = _import(module_name, class_name, name)
    kwargs = {**defaults, **args}
    relative_step = False

    if is_adaptive(name):
        if lr < 0.1:
            notes.append(
                f"{name} finds its own step size; learning rates near 1.0 are normal. lr={lr} is very "
                "low and will make it learn slowly."
            )
        if len({g.get("lr", lr) for g in param_groups}) > 1:
            notes.append(
                f"{name} uses one learning rate for all groups (the first one); per-part rates are ignored."
            )
            first = param_groups[0].get("lr", lr)
            param_groups = [{**g, "lr": first} for g in param_groups]
    if key == "adafactor":
        kwargs.setdefault("relative_step", True)
        kwargs.setdefault("scale_parameter", True)
        kwargs.setdefault("warmup_init", False)
        relative_step = bool(kwargs["relative_step"])
        if relative_step:
            notes.append(
                "AdaFactor with relative_step=True (its default) picks its own learning rate: unet_lr, "
                "text_encoder_lr and the lr schedule are ignored. Add optimizer_args = "
                '["relative_step=False", "scale_parameter=False", "warmup_init=False"] to use your rates.'
            )
            param_groups = [{k: v for k, v in g.items() if k != "lr"} for g in param_groups]
            return OptimizerSetup(cls(param_groups, lr=None, **kwargs), name, notes, relative_step=True)
    if key == "adamw" and "fused" not in kwargs and "foreach" not in kwargs:
        params = [p for g in param_groups for p in g["params"]]
        if params and all(p.is_floating_point() for p in params) and _fused_ok(params):
            kwargs["fused"] = True
    return OptimizerSetup(cls(param_groups, lr=lr, **kwargs), name, notes, relative_step)


def fuse_backward(optimizer: torch.optim.Optimizer, max_grad_norm: float | None = None) -> list:
    """sd-scripts' fused_backward_pass: each parameter is clipped (on its own, as sd-scripts does)
    and updated the moment its gradient is complete, and the gradient freed, so the gradients
    of the whole model never exist at once (for a full fine-tune, as much memory as the weights).

    Works with any optimizer whose `step` skips parameters without a gradient (AdamW, AdaFactor,
    Lion, ...): during one parameter's hook every group holds only that parameter. Returns the
    hook handles."""
    groups = optimizer.param_groups
    handles = []

    def hook(param: torch.Tensor, group: dict) -> None:
        if max_grad_norm:
            torch.nn.utils.clip_grad_norm_([param], max_grad_norm)
        lists = [g["params"] for g in groups]
        for g in groups:
            g["params"] = [param] if g is group else []
        try:
            optimizer.step()
        finally:
            for g, params in zip(groups, lists):
                g["params"] = params
        param.grad = None

    for group in groups:
        for param in group["params"]:
            handles.append(param.register_post_accumulate_grad_hook(lambda p, g=group: hook(p, g)))
    return handles


def _fused_ok(params: list[torch.Tensor]) -> bool:
    device = params[0].device.type
    return device in ("cuda", "cpu") and all(p.device.type == device for p in params)


def _import(module_name: str, class_name: str, name: str):
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        package = PACKAGES.get(module_name.split(".")[0], module_name.split(".")[0])
        raise ConfigError(
            f"optimizer_type '{name}' needs the package {package}, which is not installed or failed to "
            f"load ({e}). Install it with: pip install {package.split()[0]}"
        ) from e
    try:
        return getattr(module, class_name)
    except AttributeError:
        raise ConfigError(f"optimizer_type '{name}': {module_name} has no class {class_name}.") from None


def effective_lrs(optimizer: torch.optim.Optimizer) -> list[float]:
    """The step size each group really uses: d·lr for D-Adaptation and Prodigy, lr otherwise."""
    out = []
    for group in optimizer.param_groups:
        lr = group.get("lr") or 0.0
        if "d" in group:
            lr = group["d"] * lr
        out.append(float(lr))
    return out


# -- learning-rate schedules ------------------------------------------------------------------


def steps_of(value: int | float, total: int) -> int:
    """sd-scripts: an int is a step count, a float below 1 is a fraction of all steps."""
    if isinstance(value, float) and 0 < value < 1:
        return int(math.ceil(value * total))
    return int(value or 0)


@dataclass(frozen=True)
class SchedulerOptions(ConfigOptions):
    lr_scheduler: str = "constant"
    learning_rate: float = 1e-4
    lr_warmup_steps: int | float = 0
    lr_decay_steps: int | float = 0
    lr_scheduler_num_cycles: int = 1
    lr_scheduler_power: float = 1.0
    lr_scheduler_min_lr_ratio: float | None = None
    lr_scheduler_type: str | None = None
    lr_scheduler_args: tuple[str, ...] | list[str] = ()


def create_scheduler(setup: OptimizerSetup, config: SchedulerOptions, total_steps: int):
    """The learning-rate schedule by its sd-scripts name. `config`: a SchedulerOptions, or
    anything with those attributes (a TrainConfig)."""
    name = config.lr_scheduler
    if setup.relative_step:
        return AdafactorSchedule(setup.optimizer, initial_lr=config.learning_rate)
    if config.lr_scheduler_type:
        module_name, _, class_name = config.lr_scheduler_type.rpartition(".")
        cls = _import(module_name, class_name, config.lr_scheduler_type)
        pairs = parse_key_values(config.lr_scheduler_args, "lr_scheduler_args")
        return cls(setup.optimizer, **{k: parse_literal(v) for k, v in pairs.items()})
    if name not in SCHEDULES:
        raise ConfigError(
            f"unknown lr_scheduler '{name}'.{did_you_mean(name, SCHEDULES)} Known: {', '.join(SCHEDULES)}."
        )
    warmup = steps_of(config.lr_warmup_steps, total_steps)
    if is_schedule_free(setup.name):
        return torch.optim.lr_scheduler.LambdaLR(setup.optimizer, lambda _: 1.0)  # it schedules itself
    if name == "cosine_with_min_lr":
        return _cosine_min_lr(setup.optimizer, warmup, total_steps, config.lr_scheduler_min_lr_ratio or 0.0)
    if name == "warmup_stable_decay":
        decay = steps_of(config.lr_decay_steps, total_steps)
        return _warmup_stable_decay(
            setup.optimizer, warmup, total_steps, decay, config.lr_scheduler_min_lr_ratio or 0.0
        )
    if name == "inverse_sqrt":
        return _inverse_sqrt(setup.optimizer, warmup)
    kwargs: dict[str, Any] = {"num_warmup_steps": warmup, "num_training_steps": total_steps}
    if name == "cosine_with_restarts":
        kwargs["num_cycles"] = config.lr_scheduler_num_cycles
    if name == "polynomial":
        kwargs["power"] = config.lr_scheduler_power
    if name == "constant":
        kwargs = {}
    if name == "constant_with_warmup":
        kwargs = {"num_warmup_steps": warmup}
    if name == "piecewise_constant":
        raise ConfigError(
            "lr_scheduler 'piecewise_constant' needs lr_scheduler_type and its rules; use another schedule."
        )
    return get_scheduler(name, setup.optimizer, **kwargs)


def _lambda(optimizer, fn):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)


def _cosine_min_lr(optimizer, warmup, total, ratio):
    def fn(step):
        if step < warmup:
            return step / max(1, warmup)
        progress = (step - warmup) / max(1, total - warmup)
        return ratio + (1 - ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return _lambda(optimizer, fn)


def _warmup_stable_decay(optimizer, warmup, total, decay, ratio):
    def fn(step):
        if step < warmup:
            return step / max(1, warmup)
        if step < total - decay:
            return 1.0
        progress = (step - (total - decay)) / max(1, decay)
        return ratio + (1 - ratio) * (1 - min(1.0, progress))

    return _lambda(optimizer, fn)


def _inverse_sqrt(optimizer, warmup):
    def fn(step):
        if step < warmup:
            return step / max(1, warmup)
        return math.sqrt(max(1, warmup)) / math.sqrt(max(step, 1))

    return _lambda(optimizer, fn)
