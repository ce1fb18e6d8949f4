"""Read a training configuration: a lorakit TOML, an sd-scripts `--config_file` TOML, or both
kinds of section layout, plus command-line overrides.

sd-scripts flattens all sections of its config file, and lora-scripts uses section names only to
organise the file; lorakit does the same, so section names never decide meaning. A `[general]`
table and `[[datasets]]` tables in the same file form an inline dataset config in sd-scripts'
dataset format.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..utils.keyvalue import parse_key_values, parse_literal
from ..utils.suggest import did_you_mean
from .options import BY_NAME, IGNORED, OPTIONS, SECTIONS, check_value

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass
class TrainConfig:
    values: dict[str, Any]
    origin: dict[str, str]  # option -> "default" | "FILE [section]" | "command line"
    dataset: dict[str, Any] | None = None  # inline sd-scripts dataset config ([general] + [[datasets]])
    ignored: dict[str, str] = field(default_factory=dict)  # sd-scripts options lorakit does not need
    path: Path | None = None

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["values"][name]
        except KeyError:
            raise AttributeError(name) from None

    def set(self, name: str, value: Any, origin: str) -> None:
        self.values[name] = check_value(BY_NAME[name], value, origin)
        self.origin[name] = origin

    def changed(self) -> dict[str, Any]:
        return {k: v for k, v in self.values.items() if self.origin[k] != "default"}


def defaults() -> TrainConfig:
    return TrainConfig({o.name: o.default for o in OPTIONS}, {o.name: "default" for o in OPTIONS})


def _known_names() -> list[str]:
    return [*BY_NAME, *IGNORED, "general", "datasets"]


def read_toml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: no such config file.")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8-sig"))
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(
            f"{path} is not valid TOML: {e}. Check quotes around text values and '=' signs."
        ) from e


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    config = defaults()
    if path is not None:
        config.path = Path(path)
        data = read_toml(path)
        dataset = {k: data.pop(k) for k in ("general", "datasets") if k in data}
        if dataset:
            config.dataset = dataset
        for key, value in data.items():
            if isinstance(value, dict):
                for inner, inner_value in value.items():
                    _apply(config, inner, inner_value, f"{path} [{key}]")
            else:
                _apply(config, key, value, str(path))
    for key, value in (overrides or {}).items():
        _apply(config, key, value, "command line")
    _normalise(config)
    return config


def _apply(config: TrainConfig, key: str, value: Any, where: str) -> None:
    if key in IGNORED:
        config.ignored[key] = IGNORED[key]
        return
    if key not in BY_NAME:
        if isinstance(value, dict):
            raise ConfigError(
                f"{where}: '{key}' is a table inside a section; sections hold plain options only."
            )
        raise ConfigError(f"{where}: unknown option '{key}'.{did_you_mean(key, _known_names())}")
    config.set(key, value, where)


# Options lorakit reads but does not act on when set; the run says so instead of staying silent.
NOT_SUPPORTED_WHEN_SET = {
    "masked_loss": "conditioning-image masks are not supported; alpha_mask (the image's transparency) is",
    "log_prefix": "TensorBoard logs go to logging_dir (or output_dir/logs)",
    "log_tracker_name": "TensorBoard logs go to logging_dir (or output_dir/logs)",
    "console_log_level": "lorakit prints the plan, warnings and progress; use --quiet for less",
}


def _normalise(config: TrainConfig) -> None:
    """Old sd-scripts switches map onto their modern options."""
    for name, why in NOT_SUPPORTED_WHEN_SET.items():
        if config.origin[name] != "default" and config.values[name] not in (None, False):
            config.ignored[name] = why
    if config.log_with not in ("tensorboard", "none"):
        if config.log_with in ("all", "wandb"):
            config.ignored["log_with"] = (
                f"'{config.log_with}': only TensorBoard logging is supported; using tensorboard"
            )
            config.set("log_with", "tensorboard", config.origin["log_with"])
        else:
            raise ConfigError(f"log_with must be tensorboard or none, got '{config.log_with}'.")
    if config.use_8bit_adam and config.origin["optimizer_type"] == "default":
        config.set("optimizer_type", "AdamW8bit", config.origin["use_8bit_adam"])
    if config.use_lion_optimizer and config.origin["optimizer_type"] == "default":
        config.set("optimizer_type", "Lion", config.origin["use_lion_optimizer"])
    if config.mixed_precision not in ("no", "fp16", "bf16"):
        raise ConfigError(f"mixed_precision must be no, fp16 or bf16, got '{config.mixed_precision}'.")
    if config.loss_type not in ("l2", "l1", "huber", "smooth_l1"):
        raise ConfigError(f"loss_type must be l2, l1, huber or smooth_l1, got '{config.loss_type}'.")
    if config.max_token_length not in (None, 75, 150, 225):
        raise ConfigError(f"max_token_length must be 75, 150 or 225, got {config.max_token_length}.")
    if config.training_type == "textual_inversion" and config.token_string and config.origin["output_name"] == "default":
        # A1111 and ComfyUI find an embedding by its file name: the file is named after the word
        config.set("output_name", config.token_string, "token_string (textual inversion)")
    for name in ("network_args", "optimizer_args", "lr_scheduler_args"):
        parse_key_values(config.values[name], name)  # a malformed item fails now, not after loading


def network_args(config: TrainConfig) -> dict[str, str]:
    """`network_args = ["conv_dim=4", "algo=loha"]` as a dict, checked for the key=value form."""
    return parse_key_values(config.network_args, "network_args")


def optimizer_args(config: TrainConfig) -> dict[str, Any]:
    return {k: parse_literal(v) for k, v in parse_key_values(config.optimizer_args, "optimizer_args").items()}


def to_toml(config: TrainConfig, only_changed: bool = False) -> str:
    """The resolved configuration as a sectioned TOML that `lorakit train` reads back."""
    lines = []
    for section in SECTIONS:
        rows = []
        for option in (o for o in OPTIONS if o.section == section):
            value = config.values[option.name]
            if value is None or (only_changed and config.origin[option.name] == "default"):
                continue
            rows.append(f"{option.name} = {toml_value(value)}")
        if rows:
            lines += [f"[{section}]", *rows, ""]
    return "\n".join(lines)


def toml_value(value: Any) -> str:
    """One value as TOML writes it (also used to fill in the quickstart template)."""

    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(str(value), ensure_ascii=False)
