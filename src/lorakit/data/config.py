"""The sd-scripts dataset config (TOML or JSON): `[general]`, `[[datasets]]`, `[[datasets.subsets]]`.

Every key sd-scripts accepts is accepted here with the same meaning and the same levels. Values
flow down: built-in default < options given by the caller (the command line) < `[general]` <
`[[datasets]]` < `[[datasets.subsets]]`. An unknown key, a key at the wrong level or a value of the
wrong type is an error that names the place in the file and the fix; all of them are reported
together.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import DatasetError
from ..utils.suggest import closest
from .problems import Problems
from .schema import DATASET, GENERAL, KEYS, LEVEL_NAMES, SUBSET, TOP_LEVEL, parse_resolution

__all__ = [
    "DataConfig",
    "DatasetConfig",
    "SubsetConfig",
    "config_from_dict",
    "load_config",
    "parse_resolution",
]

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass
class SubsetConfig:
    """One folder of images (or one metadata file) and how its images and captions are used."""

    image_dir: Path | None = None
    is_reg: bool = False
    alpha_mask: bool = False
    metadata_file: Path | None = None
    conditioning_data_dir: Path | None = None
    num_repeats: int = 1
    class_tokens: str | None = None
    caption_extension: str = ".caption"
    ignore_other_captions: bool = False
    cache_info: bool = False
    shuffle_caption: bool = False
    keep_tokens: int = 0
    keep_tokens_separator: str = ""
    secondary_separator: str | None = None
    caption_separator: str = ","
    enable_wildcard: bool = False
    caption_prefix: str | None = None
    caption_suffix: str | None = None
    token_warmup_min: int = 1
    token_warmup_step: float = 0
    custom_attributes: dict = field(default_factory=dict)
    resize_interpolation: str | None = None
    caption_dropout_rate: float = 0.0
    caption_dropout_every_n_epochs: int = 0
    caption_tag_dropout_rate: float = 0.0
    color_aug: bool = False
    flip_aug: bool = False
    face_crop_aug_range: tuple[float, float] | None = None
    random_crop: bool = False
    alpha_background: tuple[int, int, int] = (255, 255, 255)
    name: str = ""  # where it came from, for messages ("datasets[0].subsets[1]" or the folder name)

    @property
    def is_fine_tuning(self) -> bool:
        return self.metadata_file is not None


@dataclass
class DatasetConfig:
    """A group of subsets trained with one resolution, one batch size and one set of buckets."""

    subsets: list[SubsetConfig]
    resolution: tuple[int, int] | None = None  # None: the model's native resolution
    batch_size: int = 1
    enable_bucket: bool = False
    min_bucket_reso: int = 256
    max_bucket_reso: int = 1024
    bucket_reso_steps: int = 64
    bucket_no_upscale: bool = False
    network_multiplier: float = 1.0
    validation_seed: int | None = None
    validation_split: float = 0.0
    name: str = ""


@dataclass
class DataConfig:
    """Everything the dataset builder needs, from a TOML file or from a folder tree."""

    datasets: list[DatasetConfig]
    source: str = ""
    problems: Problems = field(default_factory=Problems)  # found while reading folders (not fatal here)


SUBSET_FIELDS = {f.name for f in fields(SubsetConfig)} - {"name"}
DATASET_FIELDS = {f.name for f in fields(DatasetConfig)} - {"subsets", "name"}


def key_default(name: str) -> Any:
    """The value a dataset key has when nothing sets it."""
    for cls in (SubsetConfig, DatasetConfig):
        for f in fields(cls):
            if f.name == name:
                return f.default_factory() if f.default_factory is not MISSING else f.default  # type: ignore[misc]
    raise KeyError(name)


def _check_table(table: Mapping, level: str, where: str, errors: list[str]) -> dict:
    """Validate one table's keys and values; return the parsed values."""
    out = {}
    for name, value in table.items():
        key = KEYS.get(name)
        if key is None:
            if level == DATASET and name == "subsets":
                continue
            hint = closest(name, [k for k, v in KEYS.items() if level in v.levels])
            if hint is None:
                hint = closest(name, KEYS)
            msg = f"{where}: unknown key '{name}'."
            errors.append(msg + (f" Did you mean '{hint}'?" if hint else " Remove it or check its spelling."))
            continue
        if level not in key.levels:
            allowed = " or ".join(LEVEL_NAMES[lv] for lv in (GENERAL, DATASET, SUBSET) if lv in key.levels)
            errors.append(f"{where}: '{name}' cannot be set here; move it to {allowed}.")
            continue
        try:
            out[name] = key.parse(value)
        except ValueError as e:
            errors.append(f"{where}: {name} {e} (found {value!r}).")
    return out


NOT_OPTIONS = ("image_dir", "metadata_file", "conditioning_data_dir", "is_reg")


def parse_options(options: Mapping, errors: list[str]) -> dict:
    """Command-line values: any key of the file except the per-folder ones; they apply to every
    subset and dataset that does not set the key itself."""
    out = {}
    for name, value in options.items():
        if name not in KEYS or name in NOT_OPTIONS:
            hint = closest(name, [k for k in KEYS if k not in NOT_OPTIONS])
            errors.append(
                f"option: unknown dataset option '{name}'." + (f" Did you mean '{hint}'?" if hint else "")
            )
            continue
        try:
            out[name] = KEYS[name].parse(value)
        except ValueError as e:
            errors.append(f"option {name} {e} (found {value!r}).")
    return out


def _place(i: int, j: int | None = None) -> str:
    s = f"[[datasets]] #{i + 1}"
    return s if j is None else s + f" → [[datasets.subsets]] #{j + 1}"


def config_from_dict(
    raw: Mapping,
    defaults: Mapping[str, Any] | None = None,
    source: str = "dataset config",
    base_dir: Path | None = None,
) -> DataConfig:
    """Validate a parsed TOML/JSON document and resolve the values of every subset.

    `defaults` are the caller's options (keys as in the file, e.g. from the command line); they
    sit below `[general]`. Relative paths are resolved like sd-scripts (against the current folder);
    when that does not exist but the path exists beside the config file, that one is used.
    """
    errors: list[str] = []
    if not isinstance(raw, Mapping):
        raise DatasetError(f"{source}: the file must contain tables [general] and [[datasets]].")
    for name in raw:
        if name not in TOP_LEVEL:
            hint = closest(name, TOP_LEVEL)
            if hint is None and name in KEYS:
                hint = "general"
                errors.append(f"{source}: '{name}' is outside any table; put it under [general].")
                continue
            errors.append(
                f"{source}: unknown table '{name}'."
                + (f" Did you mean '{hint}'?" if hint else " Only [general] and [[datasets]] are allowed.")
            )
    defaults_parsed = parse_options(defaults or {}, errors)
    general = raw.get("general", {})
    if not isinstance(general, Mapping):
        errors.append(f"{source}: 'general' must be a table: write [general] on its own line.")
        general = {}
    general_parsed = _check_table(general, GENERAL, "[general]", errors)
    datasets_raw = raw.get("datasets", [])
    if isinstance(datasets_raw, Mapping):
        errors.append(f"{source}: write [[datasets]] (two brackets), not [datasets]: there can be several.")
        datasets_raw = []
    if not datasets_raw and not errors:
        errors.append(f"{source}: no [[datasets]] table: add one with at least one [[datasets.subsets]].")

    datasets: list[DatasetConfig] = []
    problems = Problems()
    for i, ds_raw in enumerate(datasets_raw):
        if not isinstance(ds_raw, Mapping):
            errors.append(f"{_place(i)}: must be a table.")
            continue
        ds_parsed = _check_table(ds_raw, DATASET, _place(i), errors)
        subsets_raw = ds_raw.get("subsets", [])
        if isinstance(subsets_raw, Mapping):
            errors.append(f"{_place(i)}: write [[datasets.subsets]] (two brackets), not [datasets.subsets].")
            subsets_raw = []
        if not subsets_raw:
            errors.append(f'{_place(i)}: has no [[datasets.subsets]]: add one with image_dir = "...".')
        values = {**defaults_parsed, **general_parsed, **ds_parsed}
        subsets = []
        for j, sub_raw in enumerate(subsets_raw):
            if not isinstance(sub_raw, Mapping):
                errors.append(f"{_place(i, j)}: must be a table.")
                continue
            sub_parsed = _check_table(sub_raw, SUBSET, _place(i, j), errors)
            merged = {**values, **sub_parsed}
            subset = SubsetConfig(
                name=_place(i, j), **{k: v for k, v in merged.items() if k in SUBSET_FIELDS}
            )
            for attr in ("image_dir", "metadata_file", "conditioning_data_dir"):
                if getattr(subset, attr) is not None:
                    setattr(subset, attr, _resolve(getattr(subset, attr), base_dir, problems))
            if subset.metadata_file is None and subset.image_dir is None:
                if subset.conditioning_data_dir is None:
                    errors.append(
                        f'{_place(i, j)}: image_dir is missing. Add image_dir = "path/to/images" '
                        '(or metadata_file = "...json" for a fine-tuning subset).'
                    )
            if subset.metadata_file is not None and sub_parsed.get("is_reg"):
                errors.append(
                    f"{_place(i, j)}: is_reg cannot be used with metadata_file (fine-tuning subsets)."
                )
            subsets.append(subset)
        kinds = {s.is_fine_tuning for s in subsets}
        if len(kinds) > 1:
            errors.append(
                f"{_place(i)}: mixes subsets with image_dir only (DreamBooth style) and subsets with "
                "metadata_file (fine-tuning style); put them in two [[datasets]]."
            )
        ds = DatasetConfig(
            subsets=subsets, name=_place(i), **{k: v for k, v in values.items() if k in DATASET_FIELDS}
        )
        errors.extend(f"{_place(i)}: {e}" for e in dataset_value_errors(ds))
        datasets.append(ds)
    if len(errors) == 1:
        raise DatasetError(f"{errors[0]} (in {source})")
    if errors:
        raise DatasetError(f"{len(errors)} problem(s) in {source}:\n" + "\n".join(f"  {e}" for e in errors))
    return DataConfig(datasets=datasets, source=source, problems=problems)


def dataset_value_errors(ds: DatasetConfig) -> list[str]:
    """Values that are each valid but impossible together (sd-scripts asserts on the same)."""
    errors = []
    if ds.batch_size < 1:
        errors.append("batch_size must be 1 or more.")
    if ds.bucket_reso_steps < 8 or ds.bucket_reso_steps % 8:
        errors.append(
            f"bucket_reso_steps must be a multiple of 8 (64 is usual; found {ds.bucket_reso_steps}): "
            "bucket sides must split into the VAE's 8-pixel blocks."
        )
    if ds.enable_bucket and not ds.bucket_no_upscale:
        if ds.min_bucket_reso > ds.max_bucket_reso:
            errors.append(
                f"min_bucket_reso ({ds.min_bucket_reso}) is larger than max_bucket_reso ({ds.max_bucket_reso})."
            )
        if ds.resolution is not None:
            if min(ds.resolution) < ds.min_bucket_reso:
                errors.append(
                    f"min_bucket_reso ({ds.min_bucket_reso}) is larger than the resolution {ds.resolution}: "
                    "lower min_bucket_reso or raise the resolution."
                )
            if max(ds.resolution) > ds.max_bucket_reso:
                errors.append(
                    f"max_bucket_reso ({ds.max_bucket_reso}) is smaller than the resolution {ds.resolution}: "
                    "raise max_bucket_reso or lower the resolution."
                )
    for s in ds.subsets:
        if s.num_repeats < 1:
            errors.append(f"{s.name}: num_repeats must be 1 or more (found {s.num_repeats}).")
        if s.keep_tokens < 0:
            errors.append(f"{s.name}: keep_tokens must be 0 or more.")
    return errors


def _resolve(value: str | Path, base_dir: Path | None, problems: Problems) -> Path:
    path = Path(os.path.expanduser(str(value)))
    if path.is_absolute() or base_dir is None or path.exists():
        return path
    beside = base_dir / path
    if beside.exists():
        problems.note(
            beside, f"'{value}' is not found from the current folder; using it relative to the config file"
        )
        return beside
    return path


def read_config_file(path: str | Path) -> dict:
    """Parse a .toml (or .json) dataset config, turning syntax errors into plain messages."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DatasetError(f"{path}: dataset config not found. Check the path.") from None
    except IsADirectoryError:
        raise DatasetError(f"{path} is a folder; give a .toml dataset config file.") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DatasetError(
            f"{path}: not UTF-8 text ({e.reason} at byte {e.start}); save it as UTF-8."
        ) from None
    if path.suffix.lower() == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise DatasetError(
                f"{path}: not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}."
            ) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise DatasetError(
            f"{path}: not valid TOML: {e}. Check quotes around text and paths "
            "(Windows paths: use / or single quotes 'C:\\train')."
        ) from None


def load_config(path: str | Path, defaults: Mapping[str, Any] | None = None) -> DataConfig:
    """Read an sd-scripts dataset config file (`--dataset_config`)."""
    path = Path(path)
    return config_from_dict(read_config_file(path), defaults, source=str(path), base_dir=path.parent)
