"""The keys of an sd-scripts dataset config: where each may be set and how its value is checked.

Each parser returns the clean value or raises ValueError with a plain reason, which the config
reader puts after the key's name and place in the file.
"""

from __future__ import annotations

from collections.abc import Callable
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
    parse: Callable[[Any], Any]
    levels: frozenset
    help: str


# Every key of sd-scripts' config_util schema, plus `alpha_background` (a lorakit addition).
KEYS: dict[str, Key] = {
    # subset keys that may also be set for a whole dataset or in [general]
    "num_repeats": Key(_int, ALL_LEVELS, "how many times each image is used per epoch"),
    "class_tokens": Key(_str, ALL_LEVELS, "caption used for images without a caption file"),
    "caption_extension": Key(_str, ALL_LEVELS, "extension of caption files (sd-scripts default .caption)"),
    "cache_info": Key(_bool, ALL_LEVELS, "sd-scripts: cache image sizes; lorakit reads them from headers"),
    "shuffle_caption": Key(_bool, ALL_LEVELS, "shuffle the tags of each caption every time it is used"),
    "keep_tokens": Key(_int, ALL_LEVELS, "number of leading tags that are never shuffled or dropped"),
    "keep_tokens_separator": Key(_str, ALL_LEVELS, "text before this separator is never shuffled"),
    "secondary_separator": Key(_str, ALL_LEVELS, "joins words into one tag; replaced by the separator"),
    "caption_separator": Key(_str, ALL_LEVELS, "separator between tags"),
    "enable_wildcard": Key(_bool, ALL_LEVELS, "{a|b} picks one; a multi-line caption gives a random line"),
    "caption_prefix": Key(_str, ALL_LEVELS, "text put before every caption"),
    "caption_suffix": Key(_str, ALL_LEVELS, "text put after every caption"),
    "token_warmup_min": Key(_int, ALL_LEVELS, "tags used at the first step of token warm-up"),
    "token_warmup_step": Key(_number, ALL_LEVELS, "step (or fraction of all steps) when all tags are used"),
    "custom_attributes": Key(_dict, ALL_LEVELS, "free values passed to the training loop"),
    "resize_interpolation": Key(_interpolation, ALL_LEVELS, "resampling filter used to resize images"),
    "caption_dropout_rate": Key(_rate, ALL_LEVELS, "chance that a caption is replaced by an empty one"),
    "caption_dropout_every_n_epochs": Key(_int, ALL_LEVELS, "every n-th epoch uses empty captions"),
    "caption_tag_dropout_rate": Key(_rate, ALL_LEVELS, "chance that each tag is left out"),
    "color_aug": Key(_bool, ALL_LEVELS, "small random hue/gamma changes"),
    "flip_aug": Key(_bool, ALL_LEVELS, "random horizontal flips"),
    "face_crop_aug_range": Key(_float_pair, ALL_LEVELS, "crop around the face given in the file name"),
    "random_crop": Key(_bool, ALL_LEVELS, "crop at a random place instead of the centre"),
    "alpha_background": Key(_color, ALL_LEVELS, "lorakit: colour put behind transparent pixels"),
    # keys for a whole dataset
    "batch_size": Key(_int, DATASET_LEVELS, "images per training step"),
    "resolution": Key(parse_resolution, DATASET_LEVELS, "training size: 512 or [width, height]"),
    "enable_bucket": Key(_bool, DATASET_LEVELS, "group images by aspect ratio instead of cropping square"),
    "min_bucket_reso": Key(_int, DATASET_LEVELS, "smallest bucket side"),
    "max_bucket_reso": Key(_int, DATASET_LEVELS, "largest bucket side"),
    "bucket_reso_steps": Key(_int, DATASET_LEVELS, "bucket sides are multiples of this"),
    "bucket_no_upscale": Key(_bool, DATASET_LEVELS, "never enlarge images; one bucket per image size"),
    "network_multiplier": Key(_number, DATASET_LEVELS, "LoRA strength used while training on this dataset"),
    "validation_seed": Key(_int, DATASET_LEVELS, "seed that picks the validation images"),
    "validation_split": Key(_rate, DATASET_LEVELS, "fraction of images kept for validation"),
    # keys of one subset only
    "image_dir": Key(_path, SUBSET_ONLY, "folder of images"),
    "is_reg": Key(_bool, SUBSET_ONLY, "the images are regularization images"),
    "alpha_mask": Key(_bool, SUBSET_ONLY, "use transparency as a loss mask"),
    "metadata_file": Key(_path, SUBSET_ONLY, "fine-tuning metadata JSON with the captions"),
    "conditioning_data_dir": Key(_path, SUBSET_ONLY, "ControlNet conditioning images (not used for LoRA)"),
}
TOP_LEVEL = ("general", "datasets")
