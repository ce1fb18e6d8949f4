"""Running a tagger or captioner over a folder of images.

With the model on a GPU, the next batch of images is read while the model works on this one;
an image that cannot be read is reported with its reason and the run goes on. Caption files are written batch by batch
through `tags.apply_edits`, the one backup mechanism of lorakit: every file a run overwrites is
first copied into `DIR/.lorakit-backup/`, so `lorakit tags restore DIR` undoes the whole run.
Nothing is written outside DIR except the metadata file the caller names.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import DatasetError
from ...utils.files import atomic_path
from ..captions import CaptionError, read_text, split_tags
from ..discover import list_images
from ..images import IMAGE_EXTENSIONS, ImageReadError, load_image
from ..problems import Problems
from ..tags import CaptionEdit, apply_edits
from .captioners import Captioner, CaptionOptions
from .wd14 import TagChooser, TagOptions, WD14Tagger

Progress = Callable[[int, int], None]  # (images done, images in all)


@dataclass
class FolderResult:
    """What a run did, for the summary the CLI prints and the web UI shows."""

    images: int = 0  # images described
    edits: list[CaptionEdit] = field(default_factory=list)  # files written (or, dry run, to write)
    unchanged: int = 0  # caption files that already said the same
    failed: list[tuple[Path, str]] = field(default_factory=list)  # images (or captions) not read
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # files left out on purpose
    backup: Path | None = None
    tag_counts: Counter = field(default_factory=Counter)  # tag -> images that got it
    tags_total: int = 0
    metadata_file: Path | None = None

    @property
    def backed_up(self) -> int:
        return sum(1 for e in self.edits if e.before is not None)

    @property
    def tags_per_image(self) -> float:
        return self.tags_total / self.images if self.images else 0.0


def find_images(folder: str | Path, recursive: bool = False) -> tuple[list[Path], list[tuple[Path, str]]]:
    """(images to describe, files left out with the reason). With `recursive`, every subfolder
    (kohya's `N_name` folders) too, except dot folders (backups, .ipynb_checkpoints)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"{folder}: folder not found.")
    folders = [folder]
    if recursive:
        for root, dirs, _ in os.walk(folder):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            folders += [Path(root) / d for d in dirs]
    problems = Problems()
    images = [p for d in folders for p in list_images(d, problems)]
    bad = {p.path for p in problems.errors}
    images = [p for p in images if p not in bad]
    if (
        not images
        and not recursive
        and any(
            p.suffix.lower() in IMAGE_EXTENSIONS for d in folder.iterdir() if d.is_dir() for p in d.iterdir()
        )
    ):
        raise DatasetError(f"{folder} has no images itself but its subfolders do; add --recursive.")
    if not images and not problems:
        exts = ", ".join(e.lstrip(".") for e in IMAGE_EXTENSIONS)
        raise DatasetError(f"{folder}: no images ({exts}) to describe.")
    return images, [(p.path, p.message) for p in problems]


def _read_batch(paths: Sequence[Path], prepare: Callable[[np.ndarray], Any]):
    ok, failed = [], []
    for path in paths:
        try:
            rgb, _ = load_image(path)
            ok.append((path, (rgb.shape[1], rgb.shape[0]), prepare(rgb)))
        except ImageReadError as e:
            failed.append((path, str(e)))
    return ok, failed


def _batches(paths: list[Path], batch_size: int, prepare: Callable[[np.ndarray], Any], ahead: bool):
    """Batches of (path, (w, h), prepared image) and the failures. With `ahead` (the model runs
    on a GPU) the next batch is read while the caller works on this one; on the CPU that would
    take cores from the model, which is slower than reading in turn."""
    groups = [paths[i : i + batch_size] for i in range(0, len(paths), batch_size)]
    if not ahead:
        for group in groups:
            yield _read_batch(group, prepare)
        return
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(_read_batch, groups[0], prepare) if groups else None
        for k in range(len(groups)):
            batch = pending.result()
            if k + 1 < len(groups):
                pending = pool.submit(_read_batch, groups[k + 1], prepare)
            yield batch


def _existing(path: Path) -> tuple[str | None, str | None]:
    """(text of the caption file or None when there is none, reason it cannot be read)."""
    if not path.is_file():
        return None, None
    try:
        return read_text(path), None
    except CaptionError as e:
        return path.read_bytes().decode("utf-8", "replace"), e.reason


def run_folder(
    folder: str | Path,
    prepare: Callable[[np.ndarray], Any],
    describe: Callable[[list[Any]], list[Any]],
    compose: Callable[[str | None, Any], str],
    *,
    extension: str,
    recursive: bool = False,
    batch_size: int = 1,
    dry_run: bool = False,
    needs_existing: bool = False,
    metadata: tuple[Path, str] | None = None,
    read_ahead: bool = False,
    progress: Progress | None = None,
) -> FolderResult:
    """The loop both faces share: `prepare` one image as it is read, `describe` a batch
    (the model), `compose` one caption from the old text and the model's output. `metadata`
    (path, key) writes sd-scripts' metadata file instead of caption files; `read_ahead` reads the
    next batch while the model works (for a model on a GPU)."""
    folder = Path(folder)
    if batch_size < 1:
        raise DatasetError(f"--batch_size must be 1 or more (got {batch_size}).")
    extension = extension if extension.startswith(".") else "." + extension
    images, result_skipped = find_images(folder, recursive)
    result = FolderResult(skipped=result_skipped)
    entries: dict[str, dict] = {}
    done = 0
    for ok, failed in _batches(images, batch_size, prepare, read_ahead):
        result.failed += failed
        outputs = describe([x for _, _, x in ok]) if ok else []
        edits = []
        for (path, size, _), out in zip(ok, outputs):
            caption_file = path.with_name(path.stem + extension)
            before, unreadable = _existing(caption_file)
            if unreadable and needs_existing:
                result.failed.append((caption_file, unreadable))
                continue
            text = compose(None if unreadable else before, out)
            result.images += 1
            if isinstance(out, list):
                result.tags_total += len(out)
                result.tag_counts.update(dict.fromkeys(out, 1))  # ties keep caption order
            if metadata is not None:
                entries[str(path.resolve())] = {metadata[1]: text, "image_size": list(size)}
            elif before != text + "\n":
                edits.append(CaptionEdit(caption_file, before, text + "\n"))
            else:
                result.unchanged += 1
        result.edits += edits
        if not dry_run:
            result.backup = apply_edits(folder, edits, result.backup)
        done += len(ok) + len(failed)
        if progress:
            progress(done, len(images))
    if metadata is not None and not dry_run:
        _write_metadata(metadata[0], metadata[1], entries)
        result.metadata_file = metadata[0]
    return result


def _write_metadata(path: Path, key: str, entries: dict[str, dict]) -> None:
    """sd-scripts' metadata for `--in_json`: JSON {image: {key: text, image_size}}, or JSONL lines
    {image_path, caption, image_size} when the name ends in .jsonl (as its tagger writes them)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        if path.suffix == ".jsonl":
            lines = [
                json.dumps(
                    {"image_path": k, "caption": v[key], "image_size": v["image_size"]}, ensure_ascii=False
                )
                for k, v in entries.items()
            ]
            tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        else:
            tmp.write_text(json.dumps(entries, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


# ---- the two faces ----------------------------------------------------------------------------


def merge_tags(existing: str | None, new: list[str], separator: str, first: Sequence[str] = ()) -> str:
    """`new` after the tags already in `existing` (each line of it), none repeated; the tags of
    `first` that are there stay in front (the trigger word)."""
    mark = separator.strip() or separator
    lines = [line for line in (existing or "").splitlines() if line.strip()] or [""]
    out = []
    for line in lines:
        old = split_tags(line, mark)
        merged = old + [t for t in new if t not in old]
        lead = [t for t in first if t in merged]
        out.append(separator.join(lead + [t for t in merged if t not in lead]))
    return "\n".join(out)


def tag_folder(
    folder: str | Path,
    tagger: WD14Tagger,
    options: TagOptions | None = None,
    *,
    caption_extension: str = ".txt",
    caption_separator: str = ", ",
    append_tags: bool = False,
    output_path: str | Path | None = None,
    recursive: bool = False,
    batch_size: int = 1,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> FolderResult:
    """Tag every image of `folder` and write `NAME.txt` beside it (or sd-scripts' metadata file
    at `output_path`). `append_tags` keeps the tags already in the file and adds the new ones."""
    options = options or TagOptions()
    choose = TagChooser(tagger.labels, options, by_score=tagger.json_layout)

    def describe(batch: list[np.ndarray]) -> list[list[str]]:
        return [[t.name for t in choose(p)] for p in tagger.scores(np.stack(batch))]

    def compose(existing: str | None, tags: list[str]) -> str:
        if append_tags:
            return merge_tags(existing, tags, caption_separator, options.always_first_tags)
        return caption_separator.join(tags)

    return run_folder(
        folder,
        tagger.pixels,
        describe,
        compose,
        extension=caption_extension,
        recursive=recursive,
        batch_size=batch_size,
        dry_run=dry_run,
        needs_existing=append_tags,
        metadata=(Path(output_path), "tags") if output_path else None,
        read_ahead=tagger.provider != "CPUExecutionProvider",
        progress=progress,
    )


def with_prefix_suffix(caption: str, prefix: str = "", suffix: str = "") -> str:
    """`prefix, caption, suffix`: a comma is put between them unless the text already ends (or
    the suffix starts) with punctuation."""
    text = caption
    if prefix.strip():
        p = prefix.rstrip()
        text = f"{p} {text}" if p[-1] in ",.;:!?" else f"{p}, {text}"
    if suffix.strip():
        s = suffix.strip()
        text = f"{text}{s}" if s[0] in ",.;:!?" else f"{text}, {s}"
    return text


def caption_folder(
    folder: str | Path,
    captioner: Captioner,
    options: CaptionOptions | None = None,
    *,
    prefix: str = "",
    suffix: str = "",
    caption_extension: str = ".caption",
    recursive: bool = False,
    batch_size: int = 1,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> FolderResult:
    """Caption every image of `folder` into `NAME.caption` (sd-scripts' make_captions.py
    extension), with `prefix`/`suffix` (a trigger word) around each caption."""
    options = options or CaptionOptions()
    captioner.seed(options.seed)

    def describe(batch: list[np.ndarray]) -> list[str]:
        return captioner.caption(batch, options)

    return run_folder(
        folder,
        lambda rgb: rgb,
        describe,
        lambda _existing, caption: with_prefix_suffix(caption, prefix, suffix),
        extension=caption_extension,
        recursive=recursive,
        batch_size=batch_size,
        dry_run=dry_run,
        read_ahead=captioner.device.type == "cuda",
        progress=progress,
    )
