"""Caption files and the per-step caption processing of sd-scripts.

A caption file is UTF-8 (a BOM is allowed: Windows Notepad writes one, and sd-scripts would keep
it as an invisible first character). What `process_caption` does, in order: pick a line (random
with `enable_wildcard`, else the first), add prefix/suffix, drop the whole caption
(`caption_dropout_*`), expand `{a|b}` wildcards, split into tags, keep the fixed ones
(`keep_tokens`, or the text around `keep_tokens_separator`), warm up, shuffle and drop tags, then
turn `secondary_separator` into the separator.
"""

from __future__ import annotations

import json
import math
import random
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import DatasetError
from .config import SubsetConfig


class CaptionError(DatasetError):
    """A caption or metadata file that cannot be read as text."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


def read_text(path: Path, what: str = "caption file") -> str:
    """UTF-8 text with or without BOM; anything else is an error naming the file and the fix."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise CaptionError(
            path,
            f"{what} is not UTF-8 text (byte 0x{data[e.start]:02x} at position {e.start}). "
            "Open it in a text editor and save it with the encoding UTF-8.",
        ) from None


def read_caption_file(path: Path) -> str:
    """The caption lines, blank lines removed, joined by newlines ("" for an empty file)."""
    lines = [line.strip() for line in read_text(path).splitlines()]
    return "\n".join(line for line in lines if line)


def caption_stems(image: Path) -> list[str]:
    """The names (without extension) a caption of `image` may have, as sd-scripts looks for them:
    the image's own, and for face-crop file names `name_cx_cy_w_h.png` also `name`."""
    tokens = image.stem.split("_")
    return [image.stem] + (["_".join(tokens[:-4])] if len(tokens) >= 5 else [])


def caption_path(image: Path, extension: str) -> Path | None:
    """The caption file of an image, as sd-scripts finds it (see `caption_stems`)."""
    ext = extension if extension.startswith(".") else "." + extension
    candidates = [image.with_name(stem + ext) for stem in caption_stems(image)]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    return None


# Caption extensions that tools write (sd-scripts' default .caption, WD14 taggers' .txt, ...):
# a caption under one of them beside an image is the user's caption, whatever extension is set.
COMMON_CAPTION_EXTENSIONS = (".txt", ".caption", ".cap", ".tags")


def other_caption_files(images, extension: str) -> dict[str, list[Path]]:
    """Common caption extension other than `extension` -> the images of `images` that have a
    caption file under it beside them (and none under `extension`): captions that a wrong
    caption_extension would silently leave out."""
    ext = extension if extension.startswith(".") else "." + extension
    found: dict[str, list[Path]] = {}
    for image in images:
        if caption_path(image, ext) is not None:
            continue
        for other in COMMON_CAPTION_EXTENSIONS:
            if other != ext.lower() and caption_path(image, other) is not None:
                found.setdefault(other, []).append(image)
    return found


def split_tags(text: str, separator: str = ",") -> list[str]:
    return [t.strip() for t in text.split(separator) if t.strip()]


def load_metadata(path: Path) -> dict[str, dict]:
    """The fine-tuning metadata JSON of sd-scripts (`merge_captions_to_metadata.py`)."""
    try:
        data = json.loads(read_text(path, "metadata file"))
    except json.JSONDecodeError as e:
        raise CaptionError(path, f"not valid JSON ({e.msg} at line {e.lineno}); fix or rebuild it.") from None
    if not isinstance(data, dict):
        raise CaptionError(path, 'metadata must map image names to {"caption": ..., "tags": ...}.')
    return data


def metadata_caption(entry: Mapping[str, Any], subset: SubsetConfig) -> str:
    """Caption and tags of one metadata entry combined as sd-scripts does."""
    caption = entry.get("caption")
    tags = entry.get("tags")
    if caption is None:
        caption, tags = tags, None
    sep = subset.caption_separator
    if subset.enable_wildcard:
        if tags is not None:
            tags = tags.replace("\n", sep)
        if caption is not None and tags is not None:
            caption = "\n".join(f"{line}{sep}{tags}" for line in caption.split("\n") if line.strip())
    elif tags:
        caption = (caption or "") + sep + tags
    return caption or ""


_WILDCARD = re.compile(r"\{([^}]+)\}")


def expand_wildcards(caption: str, rng: random.Random) -> str:
    """`{a|b|c}` -> one of them; `{{` and `}}` stand for literal braces."""
    open_mark, close_mark = "\u2985", "\u2986"
    while open_mark in caption or close_mark in caption:
        open_mark += "\u2985"
        close_mark += "\u2986"
    caption = caption.replace("{{", open_mark).replace("}}", close_mark)
    caption = _WILDCARD.sub(lambda m: rng.choice(m.group(1).split("|")), caption)
    return caption.replace(open_mark, "{").replace(close_mark, "}")


def warmup_steps(subset: SubsetConfig, max_train_steps: int | None) -> int:
    """`token_warmup_step` below 1 is a fraction of all training steps (as in sd-scripts)."""
    step = subset.token_warmup_step
    if 0 < step < 1:
        return math.floor(step * max_train_steps) if max_train_steps else 0
    return int(step)


def split_fixed(caption: str, subset: SubsetConfig) -> tuple[list[str], list[str], list[str]]:
    """(fixed front tags, tags that may move or drop, fixed end tags)."""
    sep = subset.caption_separator
    keep_sep = subset.keep_tokens_separator
    if keep_sep and keep_sep in caption:
        front, rest = caption.split(keep_sep, 1)
        end = ""
        if keep_sep in rest:
            rest, end = rest.split(keep_sep, 1)
        return split_tags(front, sep), split_tags(rest, sep), split_tags(end, sep)
    tags = split_tags(caption, sep)
    k = max(subset.keep_tokens, 0)
    return tags[:k], tags[k:], []


def process_caption(
    caption: str,
    subset: SubsetConfig,
    rng: random.Random,
    epoch: int = 1,
    step: int = 0,
    max_train_steps: int | None = None,
) -> str:
    """The caption one image gets at one step (`epoch` counts from 1, `step` from 0)."""
    lines = caption.split("\n")
    caption = rng.choice(lines) if subset.enable_wildcard and len(lines) > 1 else lines[0]
    if subset.caption_prefix:
        caption = subset.caption_prefix + " " + caption
    if subset.caption_suffix:
        caption = caption + " " + subset.caption_suffix

    dropped = subset.caption_dropout_rate > 0 and rng.random() < subset.caption_dropout_rate
    every = subset.caption_dropout_every_n_epochs
    if dropped or (every > 0 and epoch % every == 0):
        return ""

    if subset.enable_wildcard:
        caption = expand_wildcards(caption, rng)

    warmup = warmup_steps(subset, max_train_steps)
    has_separator = bool(subset.keep_tokens_separator) and subset.keep_tokens_separator in caption
    if subset.shuffle_caption or warmup > 0 or subset.caption_tag_dropout_rate > 0 or has_separator:
        fixed, flex, fixed_end = split_fixed(caption, subset)
        if warmup > 0 and step < warmup:
            n = math.floor(step * (len(flex) - subset.token_warmup_min) / warmup) + subset.token_warmup_min
            flex = flex[: max(n, 0)]
        if subset.shuffle_caption:
            rng.shuffle(flex)
        if subset.caption_tag_dropout_rate > 0:
            flex = [t for t in flex if rng.random() >= subset.caption_tag_dropout_rate]
        caption = ", ".join(fixed + flex + fixed_end)

    if subset.secondary_separator:
        caption = caption.replace(subset.secondary_separator, subset.caption_separator)
    return caption
