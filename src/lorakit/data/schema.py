"""The keys of an sd-scripts dataset config: where each may be set and how its value is checked.

Each parser returns the clean value or raises ValueError with a plain reason, which the config
reader puts after the key's name and place in the file.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

GENERAL, DATASET, SUBSET = "general", "dataset", "subset"
ALL_LEVELS = frozenset({GENERAL, DATASET, SUBSET})
DATASET_LEVELS = frozenset({GENERAL, DATASET})
SUBSET_ONLY = frozenset({SUBSET})
LEVEL_NAMES = {GENERAL: "[general]", DATASET: "[[datasets]]", SUBSET: "[[datasets.subsets]]"}

INTERPOLATIONS = ("lanczos", "nearest", "bilinear", "linear", "bicubic", "cubic", "area", "box")


# ---- value parsers: each returns the clean value or raises ValueError with a plain reason ----


def _bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    raise ValueError("must be true or false (without quotes)")


def _int(v: Any) -> int:
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, str) and v.strip().lstrip("-").isdigit():
        raise ValueError(f"must be a whole number; write {v.strip()} without quotes")
    raise ValueError("must be a whole number, like 10")


def _number(v: Any) -> float:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    raise ValueError("must be a number, like 0.1")


def _rate(v: Any) -> float:
    x = _number(v)
    if not 0.0 <= x <= 1.0:
        raise ValueError("must be between 0 and 1 (0.1 means 10%)")
    return x


def _str(v: Any) -> str:
    if isinstance(v, str):
        return v
    raise ValueError('must be text in quotes, like "value"')


def _path(v: Any) -> str:
    if isinstance(v, str) and v.strip():
        if any(ord(c) < 32 for c in v):
            # "C:\train\new" in double quotes: TOML reads \t as a tab and \n as a line break
            raise ValueError(
                "contains a tab or line break, which TOML makes from \\t or \\n in double quotes; write "
                "Windows paths with / (\"C:/train/10_x\") or in single quotes ('C:\\train\\10_x')"
            )
        return v
    raise ValueError('must be a folder or file path in quotes, like "C:/train/10_sks dog"')


def _dict(v: Any) -> dict:
    if isinstance(v, dict):
        return dict(v)
    raise ValueError("must be a table, like { key = 1 }")


def _float_pair(v: Any) -> tuple[float, float] | None:
    if v is None:
        return None
    if isinstance(v, (list, tuple)) and len(v) == 2:
        a, b = (_number(x) for x in v)
        if a > b:
            raise ValueError(f"first value must not be larger than the second: write [{b}, {a}]")
        return (a, b)
    raise ValueError("must be two numbers, like [0.3, 0.6]")


def parse_resolution(v: Any) -> tuple[int, int]:
    """`512`, `[512, 768]` or, from a command line, "512", "512,768" or "512x768" -> (width, height)."""
    if isinstance(v, str):
        parts = [p for p in v.replace("x", ",").replace("X", ",").split(",") if p.strip()]
        try:
            v = [int(p) for p in parts]
        except ValueError:
            raise ValueError("must be a number like 512 or a pair like [512, 768] (width, height)") from None
        if len(v) == 1:
            v = v[0]
    if isinstance(v, int) and not isinstance(v, bool):
        w = h = v
    elif isinstance(v, (list, tuple)) and len(v) == 2:
        w, h = (_int(x) for x in v)
    else:
        raise ValueError("must be a number like 512 or a pair like [512, 768] (width, height)")
    if w <= 0 or h <= 0:
        raise ValueError("must be larger than 0")
    if w % 8 or h % 8:
        raise ValueError("must be a multiple of 8 (the VAE works in blocks of 8 pixels), like 512 or 768")
    return (w, h)


def _interpolation(v: Any) -> str | None:
    if v is None:
        return None
    s = _str(v).lower()
    if s not in INTERPOLATIONS:
        raise ValueError(f"must be one of {', '.join(INTERPOLATIONS)}")
    return s


def _color(v: Any) -> tuple[int, int, int]:
    """A background colour: "white", "black", "#rrggbb" or [r, g, b]."""
    named = {"white": (255, 255, 255), "black": (0, 0, 0), "gray": (128, 128, 128), "grey": (128, 128, 128)}
    if isinstance(v, str):
        s = v.strip().lower()
        if s in named:
            return named[s]
        if s.startswith("#") and len(s) == 7:
            try:
                return tuple(int(s[i : i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]
            except ValueError:
                pass
    elif (
        isinstance(v, (list, tuple)) and len(v) == 3 and all(isinstance(c, int) and 0 <= c <= 255 for c in v)
    ):
        return tuple(v)  # type: ignore[return-value]
    raise ValueError('must be "white", "black", "#rrggbb" or [r, g, b] with values 0-255')


@dataclass(frozen=True)
class Key:
    """One dataset key. `option` is its name as a `lorakit train` option and command-line flag
    (sd-scripts' name; None for keys that exist only in dataset files), `kind` how a command
    line value is read (see `lorakit.training.options.Option`). Defaults live in the
    `SubsetConfig` / `DatasetConfig` dataclasses (`config.py`)."""

    parse: Callable[[Any], Any]
    levels: frozenset
    help: str
    option: str | None = None
    kind: str = "str"


def _k(parse, levels, help, option=None, kind="str") -> Key:
    return Key(parse, levels, help, option, kind)


A, DS, SUB = ALL_LEVELS, DATASET_LEVELS, SUBSET_ONLY

# Every key of sd-scripts' config_util schema, plus `alpha_background` (a lorakit addition); the
# help is the plain-words text `lorakit train --help`, `lorakit dataset check --help` and the web
# UI show for the option.
KEYS: dict[str, Key] = {
    # subset keys that may also be set for a whole dataset or in [general]
    "num_repeats": _k(_int, A, "How many times each image is used per epoch (the N of an N_name folder)."),
    "class_tokens": _k(_str, A, "Caption used for images without a caption file."),
    "caption_extension": _k(
        _str, A, "File extension of caption files (sd-scripts default .caption; many datasets use .txt).",
        "caption_extension",
    ),
    "ignore_other_captions": _k(
        _bool, A,
        "Train images without a caption_extension file on their class tokens even when a caption "
        "under another extension (.txt, .caption, .tags) lies beside them; otherwise that stops training.",
        "ignore_other_captions", "bool",
    ),
    "cache_info": _k(_bool, A, "sd-scripts: cache image sizes; lorakit reads them from the image headers."),
    "shuffle_caption": _k(_bool, A, "Shuffle the tags of each caption every time it is used.", "shuffle_caption", "bool"),
    "keep_tokens": _k(
        _int, A, "Keep the first N tags in place when shuffling (put the trigger word first).", "keep_tokens", "int"
    ),
    "keep_tokens_separator": _k(
        _str, A, "Text before this separator (e.g. |||) is kept in place and never shuffled or dropped.",
        "keep_tokens_separator",
    ),
    "secondary_separator": _k(
        _str, A, "Tags joined by this separator (e.g. ;;;) are treated as one tag.", "secondary_separator"
    ),
    "caption_separator": _k(_str, A, "Character between tags in captions.", "caption_separator"),
    "enable_wildcard": _k(
        _bool, A,
        "Expand {a|b} in captions to one of the choices, and use a random line of multi-line caption files.",
        "enable_wildcard", "bool",
    ),
    "caption_prefix": _k(_str, A, "Text added before every caption.", "caption_prefix"),
    "caption_suffix": _k(_str, A, "Text added after every caption.", "caption_suffix"),
    "token_warmup_min": _k(_int, A, "Tags used at the start of token warm-up.", "token_warmup_min", "int"),
    "token_warmup_step": _k(
        _number, A, "Steps (or a ratio of all steps) over which the number of tags grows to all.",
        "token_warmup_step", "number",
    ),
    "custom_attributes": _k(_dict, A, "Free values passed to the training loop."),
    "resize_interpolation": _k(
        _interpolation, A, "How images are resized: lanczos, nearest, bilinear, bicubic or area.",
        "resize_interpolation",
    ),
    "caption_dropout_rate": _k(
        _rate, A, "Chance that a caption is replaced by an empty one (teaches the model without text).",
        "caption_dropout_rate", "float",
    ),
    "caption_dropout_every_n_epochs": _k(
        _int, A, "Drop all captions every N epochs.", "caption_dropout_every_n_epochs", "int"
    ),
    "caption_tag_dropout_rate": _k(
        _rate, A, "Chance that each tag is left out.", "caption_tag_dropout_rate", "float"
    ),
    "color_aug": _k(
        _bool, A, "Randomly shift hue a little (cannot be used with cached latents).", "color_aug", "bool"
    ),
    "flip_aug": _k(
        _bool, A, "Randomly mirror images left-right. Do not use for asymmetric subjects.", "flip_aug", "bool"
    ),
    "face_crop_aug_range": _k(
        _float_pair, A, "Crop around the face at a random scale in this range, e.g. [2.0, 4.0].",
        "face_crop_aug_range", "floats",
    ),
    "random_crop": _k(
        _bool, A, "Crop at a random place instead of the centre (cannot be used with cached latents).",
        "random_crop", "bool",
    ),
    "alpha_background": _k(
        _color, A, 'lorakit: colour put behind transparent pixels ("white", "black", "#rrggbb" or [r, g, b]).'
    ),
    # keys for a whole dataset
    "batch_size": _k(_int, DS, "Images trained together in one step.", "train_batch_size", "int"),
    "resolution": _k(
        parse_resolution, DS,
        "Training resolution: 512, or W,H. With buckets it is the maximum image area. "
        "Empty = the model's own (512 SD1, 768 SD2-768, 1024 SDXL).",
        "resolution",
    ),
    "enable_bucket": _k(
        _bool, DS, "Group images by aspect ratio instead of cropping all to a square.", "enable_bucket", "bool"
    ),
    "min_bucket_reso": _k(_int, DS, "Smallest bucket side in pixels.", "min_bucket_reso", "int"),
    "max_bucket_reso": _k(_int, DS, "Largest bucket side in pixels.", "max_bucket_reso", "int"),
    "bucket_reso_steps": _k(
        _int, DS, "Bucket sides are multiples of this (64 is safe for all models).", "bucket_reso_steps", "int"
    ),
    "bucket_no_upscale": _k(
        _bool, DS, "Never enlarge small images to fill a bucket.", "bucket_no_upscale", "bool"
    ),
    "network_multiplier": _k(_number, DS, "LoRA strength used while training on this dataset."),
    "validation_seed": _k(
        _int, DS, "Seed that picks the validation images and their noise.", "validation_seed", "int"
    ),
    "validation_split": _k(
        _rate, DS, "Fraction of images held out to measure validation loss (e.g. 0.1).", "validation_split",
        "float",
    ),
    # keys of one subset only
    "image_dir": _k(_path, SUB, "Folder of images."),
    "is_reg": _k(_bool, SUB, "The images are regularization images."),
    "alpha_mask": _k(
        _bool, SUB, "Use the image's transparency as a loss mask (train only the visible part).", "alpha_mask",
        "bool",
    ),
    "metadata_file": _k(_path, SUB, "Fine-tuning metadata JSON with the captions."),
    "conditioning_data_dir": _k(_path, SUB, "ControlNet conditioning images (not used for LoRA)."),
}  # fmt: skip
TOP_LEVEL = ("general", "datasets")

# training option name -> dataset key (train_batch_size -> batch_size, the rest by the same name)
OPTION_KEYS = {k.option: name for name, k in KEYS.items() if k.option}


def options_for_dataset(values: Mapping[str, Any]) -> dict[str, Any]:
    """Training options (by option name, as a config or command line gives them) as dataset
    keys: the defaults of every dataset, below what a dataset file sets itself."""
    return {OPTION_KEYS[name]: value for name, value in values.items() if name in OPTION_KEYS}
