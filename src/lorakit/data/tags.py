"""`lorakit tags`: edit the tags of every caption file in a folder, safely.

Each change first copies the files it touches into `FOLDER/.lorakit-backup/tags-<time>/`
(dot folders are ignored by lorakit and hold no images, so sd-scripts skips them too) and writes
each caption atomically; `restore` puts a backup back. `--dry-run` shows the changes and writes
nothing.
"""

from __future__ import annotations

import shutil
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import DatasetError
from ..utils.files import atomic_path
from .captions import CaptionError, read_text, split_tags
from .images import IMAGE_EXTENSIONS

BACKUP_DIR = ".lorakit-backup"
CREATED_LIST = "created-files.txt"


@dataclass
class CaptionEdit:
    path: Path
    before: str | None  # None: the file does not exist yet
    after: str


def _walk(folder: Path, recursive: bool):
    if not recursive:
        yield from sorted(p for p in folder.iterdir() if p.is_file())
        return
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts[:-1]) or not p.is_file():
            continue
        yield p


def caption_extension(folder: Path, extension: str | None, recursive: bool) -> str:
    """The caption extension to edit: the one given, or the only one of .txt/.caption present."""
    if extension:
        return extension if extension.startswith(".") else "." + extension
    if not folder.is_dir():
        raise DatasetError(f"{folder}: folder not found.")
    files = list(_walk(folder, recursive))
    image_stems = {(p.parent, p.stem) for p in files if p.suffix.lower() in IMAGE_EXTENSIONS}
    found = Counter(
        p.suffix for p in files if p.suffix in (".txt", ".caption") and (p.parent, p.stem) in image_stems
    )
    if len(found) == 2:
        raise DatasetError(
            f"{folder} has both .txt ({found['.txt']}) and .caption ({found['.caption']}) files; "
            "choose one with --caption_extension."
        )
    if not found:
        raise DatasetError(
            f"{folder}: no caption files (.txt or .caption). Give --caption_extension if they differ."
        )
    return next(iter(found))


def caption_files(folder: Path, extension: str, recursive: bool) -> list[Path]:
    """Caption files that belong to an image (same name): a readme.txt is never edited."""
    if not folder.is_dir():
        raise DatasetError(f"{folder}: folder not found.")
    files = list(_walk(folder, recursive))
    image_stems = {(p.parent, p.stem) for p in files if p.suffix.lower() in IMAGE_EXTENSIONS}
    return [
        p
        for p in files
        if p.suffix == extension and not p.name.startswith(".") and (p.parent, p.stem) in image_stems
    ]


def images_without_caption(folder: Path, extension: str, recursive: bool) -> list[Path]:
    return [
        p
        for p in _walk(folder, recursive)
        if p.suffix.lower() in IMAGE_EXTENSIONS
        and not p.name.startswith(".")
        and not p.with_name(p.stem + extension).exists()
    ]


def _join(tags: list[str], separator: str) -> str:
    return (separator + " " if separator.strip() == separator else separator).join(tags)


# ---- operations on one line's tags ---------------------------------------------------------


def op_add(new: list[str], at_end: bool = False) -> Callable[[list[str]], list[str]]:
    """Put `new` at the front (or end) once: other copies of those tags are removed."""

    def f(tags: list[str]) -> list[str]:
        rest = [t for t in tags if t not in new]
        return rest + new if at_end else new + rest

    return f


def op_remove(remove: list[str]) -> Callable[[list[str]], list[str]]:
    return lambda tags: [t for t in tags if t not in remove]


def op_replace(old: str, new: str) -> Callable[[list[str]], list[str]]:
    return lambda tags: op_dedup()([new if t == old else t for t in tags])


def op_dedup() -> Callable[[list[str]], list[str]]:
    def f(tags: list[str]) -> list[str]:
        seen, out = set(), []
        for t in tags:
            if t not in seen:
                seen.add(t)
                out.append(t)
        return out

    return f


def plan_edits(
    folder: str | Path,
    operation: Callable[[list[str]], list[str]],
    extension: str | None = None,
    recursive: bool = False,
    separator: str = ",",
    create_missing: list[str] | None = None,
) -> tuple[list[CaptionEdit], list[tuple[Path, str]]]:
    """The changes `operation` makes (only files whose text changes) and unreadable files."""
    folder = Path(folder)
    ext = caption_extension(folder, extension, recursive)
    edits, unreadable = [], []
    for path in caption_files(folder, ext, recursive):
        try:
            text = read_text(path)
        except CaptionError as e:
            unreadable.append((path, e.reason))
            continue
        lines = text.splitlines()
        new_lines = [
            _join(operation(split_tags(line, separator)), separator) if line.strip() else line
            for line in lines
        ]
        if not any(line.strip() for line in lines):
            new_lines = [_join(operation([]), separator)]
        after = "\n".join(new_lines) + ("\n" if text.endswith("\n") else "")
        if after != text:
            edits.append(CaptionEdit(path, text, after))
    if create_missing:
        for image in images_without_caption(folder, ext, recursive):
            edits.append(
                CaptionEdit(image.with_name(image.stem + ext), None, _join(create_missing, separator) + "\n")
            )
    return edits, unreadable


def _new_backup_folder(folder: Path) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    backup = folder / BACKUP_DIR / f"tags-{stamp}"
    n = 1
    while backup.exists():
        n += 1
        backup = folder / BACKUP_DIR / f"tags-{stamp}-{n}"
    backup.mkdir(parents=True)
    return backup


def apply_edits(folder: str | Path, edits: list[CaptionEdit], backup: Path | None = None) -> Path | None:
    """Back up the files `edits` change, then write them. Returns the backup folder.

    Pass the folder an earlier call returned as `backup` to add to it: a long run (`lorakit tag`)
    writes batch by batch and still leaves one backup that `restore` undoes in one go.
    """
    if not edits:
        return backup
    folder = Path(folder)
    if backup is None:
        backup = _new_backup_folder(folder)
    created = []
    for e in edits:
        if e.before is None:
            created.append(str(e.path.relative_to(folder)))
            continue
        target = backup / e.path.relative_to(folder)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(e.path, target)
    if created:
        with open(backup / CREATED_LIST, "a", encoding="utf-8") as f:
            f.write("\n".join(created) + "\n")
    for e in edits:
        with atomic_path(e.path) as tmp:
            tmp.write_text(e.after, encoding="utf-8", newline="")
    return backup


def list_backups(folder: str | Path) -> list[Path]:
    root = Path(folder) / BACKUP_DIR
    return sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def restore_backup(folder: str | Path, name: str | None = None) -> tuple[Path, list[Path], list[Path]]:
    """Put a backup back (the newest, or `name`): (backup, files restored, created files removed)."""
    folder = Path(folder)
    backups = list_backups(folder)
    if not backups:
        raise DatasetError(f"{folder}: no tag backups ({BACKUP_DIR} is missing or empty).")
    if name is None:
        backup = backups[-1]
    else:
        matches = [b for b in backups if b.name == name]
        if not matches:
            raise DatasetError(f"no backup named {name}; there are: {', '.join(b.name for b in backups)}")
        backup = matches[0]
    restored, removed = [], []
    for src in sorted(backup.rglob("*")):
        if src.is_file() and src.name != CREATED_LIST:
            dst = folder / src.relative_to(backup)
            with atomic_path(dst) as tmp:
                shutil.copy2(src, tmp)
            restored.append(dst)
    created = backup / CREATED_LIST
    if created.is_file():
        for rel in created.read_text(encoding="utf-8").splitlines():
            path = folder / rel
            if rel and path.is_file():
                path.unlink()
                removed.append(path)
    return backup, restored, removed


def tag_stats(
    folder: str | Path, extension: str | None = None, recursive: bool = False, separator: str = ","
) -> tuple[Counter, int, list[tuple[Path, str]]]:
    """(tag -> files that have it, number of caption files, unreadable files)."""
    folder = Path(folder)
    ext = caption_extension(folder, extension, recursive)
    counts: Counter = Counter()
    files = caption_files(folder, ext, recursive)
    unreadable = []
    for path in files:
        try:
            text = read_text(path)
        except CaptionError as e:
            unreadable.append((path, e.reason))
            continue
        counts.update({t for line in text.splitlines() for t in split_tags(line, separator)})
    return counts, len(files) - len(unreadable), unreadable
