"""The training form's live plan: the step arithmetic per dataset folder and the warnings
`lorakit train` prints before its first step, for a config that is still being written.

The same library functions as the training's plan (`training.plan.plan_steps` and
`check_settings`, the dataset built by `training.setup.data_config` and `data.build_datasets`,
`data.make_plan`), but nothing heavy: the model file's header only, image headers only, and the
optimizer built on a one-number stand-in for the network (it says what it would say about the
real one). Paths are read as a job reads them: relative to the workspace, inside the roots.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import torch

from ..data import build_datasets, make_plan
from ..errors import LorakitError
from ..models.load import model_facts
from ..training.config import TrainConfig, optimizer_args
from ..training.optim import create_optimizer
from ..training.plan import check_settings, plan_steps
from ..training.setup import data_config
from .kinds import SUBSET_PATHS, read_training
from .security import location_of, resolve_user_path
from .workspace import Workspace

PATH_OPTIONS = (
    "pretrained_model_name_or_path",
    "train_data_dir",
    "reg_data_dir",
    "dataset_config",
    "in_json",
)
DEFAULT_RESOLUTION = 512


def _absolute(config: TrainConfig, roots: dict[str, Path]) -> None:
    """Every path the plan reads made absolute (refused when outside the roots)."""
    for name in PATH_OPTIONS:
        value = config.values.get(name)
        if value:
            config.values[name] = str(resolve_user_path(str(value), roots))
    if config.dataset:
        config.dataset = copy.deepcopy(config.dataset)
        for dataset in config.dataset.get("datasets") or []:
            for table in [dataset, *(dataset.get("subsets") or [])] if isinstance(dataset, dict) else []:
                for key in SUBSET_PATHS:
                    if isinstance(table.get(key), str):
                        table[key] = str(resolve_user_path(table[key], roots))


def optimizer_notes(config: TrainConfig) -> list[str]:
    """What the optimizer says about these settings (D-Adaptation with a small learning rate,
    per-part rates it ignores, a package that is missing)."""
    groups = [{"params": [torch.zeros(1, requires_grad=True)], "lr": config.unet_lr or config.learning_rate}]
    te = config.text_encoder_lr
    if te is not None and not config.network_train_unet_only:
        groups.append(
            {"params": [torch.zeros(1, requires_grad=True)], "lr": te[0] if isinstance(te, list) else te}
        )
    try:
        return create_optimizer(
            config.optimizer_type, groups, config.learning_rate, optimizer_args(config)
        ).notes
    except (LorakitError, TypeError, ValueError) as e:
        return [str(e)]


def _datasets(report, roots) -> list[dict]:
    """The datasets of the plan, with each folder as a location (the form's repeats are keyed by it)."""
    datasets = report.to_dict()["datasets"] if report is not None else []
    for subset in (s for d in datasets for s in d["subsets"]):
        folder = subset.pop("folder")
        subset["location"] = location_of(Path(folder), roots) if folder else None
    return datasets


def _error(message: str) -> dict:
    return {"level": "error", "message": message, "location": None}


def _model(config: TrainConfig, problems: list[dict]):
    """The base model's facts from its header (None when it is not chosen or not readable)."""
    if not config.pretrained_model_name_or_path:
        problems.append(_error("no base model yet: choose pretrained_model_name_or_path."))
        return None
    try:
        return model_facts(config.pretrained_model_name_or_path, True if config.v_parameterization else None)
    except LorakitError as e:
        problems.append(_error(str(e)))
        return None


def _group(config: TrainConfig, resolution: int, problems: list[dict]):
    """The training dataset as `lorakit train` builds it, from image headers only."""
    if not (config.train_data_dir or config.dataset_config or config.dataset):
        problems.append(_error("no pictures yet: choose train_data_dir (a dataset)."))
        return None
    try:
        return build_datasets(
            data_config(config), resolution=resolution, prior_loss_weight=config.prior_loss_weight,
            seed=config.seed or 42, verify_images=False, strict=False,
        )  # fmt: skip
    except LorakitError as e:
        problems.append(_error(str(e)))
        return None


def plan_config(workspace: Workspace, text: str) -> dict:
    """The plan of a training TOML; problems are part of the answer, not errors (a form being
    filled in is incomplete most of the time)."""
    config = read_training(workspace, text)
    roots = workspace.roots()
    _absolute(config, roots)
    problems: list[dict] = []
    facts = _model(config, problems)
    group = _group(config, facts.resolution if facts else DEFAULT_RESOLUTION, problems)
    report = make_plan(group) if group is not None else None
    if report is not None:
        problems += [
            {
                "level": p.level,
                "message": p.message,
                "location": location_of(p.path, roots) if p.path else None,
            }
            for p in report.problems
            if p.level != "note"
        ]
    batches = report.steps_per_epoch if report else 0
    samples = report.samples if report else 0
    plan = plan_steps(
        batches, samples, config.train_batch_size, config.max_train_steps, config.max_train_epochs,
        config.gradient_accumulation_steps, 1,
    )  # fmt: skip
    is_xl = facts.family.is_xl if facts else bool(config.sdxl)
    warnings = check_settings(
        config, plan, is_xl, report.train_images if report else 0, optimizer_notes(config)
    )
    effective = config.train_batch_size * config.gradient_accumulation_steps
    return {
        "model": {"family": facts.family.label, "resolution": facts.resolution} if facts else None,
        "datasets": _datasets(report, roots),
        "samples_per_epoch": samples,
        "steps_per_epoch": plan.steps_per_epoch,
        "epochs": plan.epochs,
        "total_steps": plan.total_steps,
        "effective_batch": effective,
        "formula_steps": math.ceil(samples * plan.epochs / effective) if effective else 0,
        "train_images": report.train_images if report else 0,
        "warnings": warnings,
        "problems": problems,
        "ignored": config.ignored,
    }
