"""Finding images: the kohya `N_name` folder convention and the files inside one image folder.

sd-scripts turns every subfolder `N_rest` of `--train_data_dir` (and `--reg_data_dir`) into a
subset with `num_repeats=N` and `class_tokens="rest"`, and skips other folders with a log line
that beginners miss. Here a skipped folder is a reported problem that says how to rename it.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import DatasetError
from .config import DataConfig, config_from_dict
from .images import IMAGE_EXTENSIONS, UNSUPPORTED_IMAGE_EXTENSIONS
from .problems import Problems

_REPEAT_PREFIX = re.compile(r"^\s*(\d+)_(.*)$")


def parse_folder_name(name: str) -> tuple[int, str] | None:
    """`10_sks dog` -> (10, "sks dog"); None when the name has no repeat prefix."""
    m = _REPEAT_PREFIX.match(name)
    if not m:
        return None
    return int(m.group(1)), m.group(2)


def _suggest_name(name: str) -> str:
    return f"10_{name}"


def find_subset_folders(base: Path, is_reg: bool, problems: Problems) -> list[dict]:
    """Subset tables (as in a TOML file) for the `N_name` subfolders of a train or reg folder."""
    kind = "reg_data_dir" if is_reg else "train_data_dir"
    if not base.exists():
        problems.error(base, f"{kind} does not exist. Check the path.")
        return []
    if not base.is_dir():
        problems.error(base, f"{kind} must be a folder that contains folders like 10_name.")
        return []
    subsets = []
    loose_images = []
    for entry in sorted(base.iterdir(), key=lambda p: p.name):
        if entry.name.startswith("."):
            continue  # .ipynb_checkpoints, .DS_Store, lorakit backups: never data
        if _is_loop(entry):
            problems.error(entry, "symbolic link loop (the link points back to itself); remove it.")
            continue
        if not entry.is_dir():
            if entry.suffix.lower() in IMAGE_EXTENSIONS:
                loose_images.append(entry)
            continue
        parsed = parse_folder_name(entry.name)
        if parsed is None:
            problems.error(
                entry,
                f"folder name has no repeat count, so sd-scripts ignores it. Rename it to "
                f"'{_suggest_name(entry.name)}' (10 = repeats per epoch, the rest = class tokens).",
            )
            continue
        repeats, class_tokens = parsed
        if repeats < 1:
            problems.error(entry, f"repeat count is {repeats}: use 1 or more, e.g. '1_{class_tokens}'.")
            continue
        subsets.append(
            {"image_dir": str(entry), "num_repeats": repeats, "class_tokens": class_tokens, "is_reg": is_reg}
        )
    if loose_images:
        if parse_folder_name(base.name) is not None:
            fix = f"this looks like an image folder itself: give its parent folder {base.parent} instead."
        else:
            fix = f"move them into a subfolder, e.g. {base / '10_name'}."
        problems.error(
            base,
            f"{len(loose_images)} image(s) lie directly in {kind}, which must hold folders like 10_name "
            f"with the images inside; {fix}",
        )
    if not subsets and not loose_images and not problems.for_path(base):
        problems.error(base, f"no folders like 10_name inside {kind}; put the images in such a folder.")
    return subsets


def config_from_folders(
    train_data_dir: str | Path | None,
    reg_data_dir: str | Path | None = None,
    in_json: str | Path | None = None,
    options: Mapping[str, Any] | None = None,
) -> DataConfig:
    """The dataset sd-scripts builds from `--train_data_dir`/`--reg_data_dir` (or `--in_json`).

    `options` are the dataset keys of the command line (resolution, batch_size, caption_extension,
    flip_aug...). Folder problems are kept in `DataConfig.problems`; they stop training later.
    """
    problems = Problems()
    if train_data_dir is None:
        raise DatasetError("no training images given: pass train_data_dir (or a dataset config file).")
    train_data_dir = Path(train_data_dir)
    if in_json is not None:
        subsets = [{"metadata_file": str(in_json), "image_dir": str(train_data_dir)}]
    else:
        subsets = find_subset_folders(train_data_dir, False, problems)
        if reg_data_dir:  # sd-scripts reads an empty value as "no reg folder"
            subsets += find_subset_folders(Path(reg_data_dir), True, problems)
    if not subsets:
        return DataConfig(datasets=[], source=str(train_data_dir), problems=problems)
    options = dict(options or {})
    raw = {"datasets": [{"subsets": subsets}]}
    config = config_from_dict(raw, options, source=str(train_data_dir))
    for ds in config.datasets:
        for subset in ds.subsets:
            subset.name = subset.image_dir.name if subset.image_dir else str(in_json)
    config.problems.extend(problems)
    return config


def _is_loop(path: Path) -> bool:
    try:
        os.stat(path)
    except OSError as e:
        return e.errno == errno.ELOOP
    except RuntimeError:  # older pathlib raises this for loops
        return True
    return False


def list_images(folder: Path, problems: Problems) -> list[Path]:
    """The images directly inside `folder` (not its subfolders, as sd-scripts), sorted by name.

    Reported: links that loop or point nowhere, macOS `._` metadata files, image types that are
    not read (gif, tiff...), and two images with the same name (their captions and latent cache
    files would be the same file).
    """
    if not folder.exists():
        problems.error(folder, "image folder does not exist. Check the path.")
        return []
    if not folder.is_dir():
        problems.error(folder, "image_dir is not a folder.")
        return []
    images: list[Path] = []
    by_stem: dict[str, list[Path]] = {}
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        suffix = entry.suffix.lower()
        if _is_loop(entry):
            problems.error(
                entry,
                "symbolic link loop (the link points back to itself); remove it or point it to an image.",
            )
            continue
        if entry.is_symlink() and not entry.exists():
            if suffix in IMAGE_EXTENSIONS:
                problems.error(
                    entry, f"symbolic link to a missing file ({os.readlink(entry)}); fix or remove it."
                )
            continue
        if entry.name.startswith("._"):
            if suffix in IMAGE_EXTENSIONS:
                problems.note(entry, "skipped: a macOS metadata file, not an image")
            continue
        if entry.name.startswith(".") or not entry.is_file():
            continue
        if suffix in IMAGE_EXTENSIONS:
            images.append(entry)
            by_stem.setdefault(entry.stem, []).append(entry)
        elif suffix in UNSUPPORTED_IMAGE_EXTENSIONS:
            problems.warning(entry, f"not used: {suffix} images are not read; convert it to .png or .jpg.")
    for stem, paths in by_stem.items():
        if len(paths) > 1:
            names = ", ".join(p.name for p in paths)
            for p in paths:
                problems.error(
                    p,
                    f"{len(paths)} images share the name '{stem}' ({names}): they would share one caption "
                    "file and one latent cache file. Rename or remove all but one.",
                )
    return images
