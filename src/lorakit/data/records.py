"""From subset configs to image records: which images, which raw captions, which buckets.

Nothing here raises on a bad file: each problem is added to a `Problems` list with the file and
the fix, so that one check shows all of them. Nothing here writes to disk.
"""

from __future__ import annotations

import math
import os
import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from .augment import face_box
from .buckets import BucketChoice, BucketSelector
from .captions import (
    COMMON_CAPTION_EXTENSIONS,
    CaptionError,
    caption_path,
    caption_stems,
    load_metadata,
    metadata_caption,
    other_caption_files,
    read_caption_file,
)
from .config import SubsetConfig
from .discover import list_images
from .images import IMAGE_EXTENSIONS, ImageInfo, ImageReadError, probe_image
from .problems import Problems

# An image enlarged more than this is an error (a thumbnail or an icon in the folder),
# more than UPSCALE_WARN a warning. Covering a bucket may cut away part of the image:
# more than CROP_ERROR of it is an error, more than CROP_WARN a warning.
UPSCALE_ERROR, UPSCALE_WARN = 8.0, 2.0
CROP_ERROR, CROP_WARN = 0.75, 0.4


@dataclass
class ImageRecord:
    path: Path
    subset: SubsetConfig
    caption: str  # the raw caption (lines joined by "\n"), before per-step processing
    caption_source: str  # "file", "class_tokens" or "metadata"
    size: tuple[int, int]  # (width, height) as trained, after EXIF orientation
    num_repeats: int
    caption_file: Path | None = None
    bucket: BucketChoice | None = None
    face: tuple[int, int, int, int] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def is_reg(self) -> bool:
        return self.subset.is_reg


def _probe_all(paths: list[Path], verify: bool) -> list[ImageInfo | ImageReadError]:
    def one(p: Path):
        try:
            return probe_image(p, verify=verify)
        except ImageReadError as e:
            return e

    workers = min(8, os.cpu_count() or 1)
    if len(paths) < 8 or workers == 1:
        return [one(p) for p in paths]
    with ThreadPoolExecutor(workers) as pool:  # Pillow decodes without holding the GIL
        return list(pool.map(one, paths))


def _caption_for(
    image: Path, subset: SubsetConfig, problems: Problems
) -> tuple[str | None, str, Path | None]:
    path = caption_path(image, subset.caption_extension)
    if path is None:
        return (subset.class_tokens, "class_tokens", None)
    try:
        text = read_caption_file(path)
    except CaptionError as e:
        problems.error(path, e.reason)
        return (None, "file", path)
    if not text:
        fallback = f"the class tokens '{subset.class_tokens}'" if subset.class_tokens else "no caption at all"
        problems.error(
            path,
            f"caption file is empty. Write the caption in it, or delete it to train this image with {fallback}.",
        )
        return (None, "file", path)
    if "\n" in text and not subset.enable_wildcard:
        problems.warning(
            path,
            "caption file has several lines but only the first is used; set enable_wildcard = true "
            "to use a random line each time",
        )
    return (text, "file", path)


def _dreambooth_images(
    subset: SubsetConfig, problems: Problems
) -> list[tuple[Path, str | None, str, Path | None]]:
    images = list_images(subset.image_dir, problems)
    out = [(img, *_caption_for(img, subset, problems)) for img in images]
    missing = [img for img, _, source, _ in out if source == "class_tokens"]
    if missing:
        _report_missing_captions(subset, missing, len(images), problems)
    _report_orphan_captions(subset, images, problems)
    return out


def _report_orphan_captions(subset: SubsetConfig, images: list[Path], problems: Problems) -> None:
    """Caption files that no image in the folder owns (its image was deleted, renamed, or left
    out by a tool): never used, and easy to mistake for a trained picture. A folder without any
    image gets its own error instead."""
    if not images:
        return
    extensions = {e.lower() for e in (*COMMON_CAPTION_EXTENSIONS, subset.caption_extension)}
    owned = {stem for image in images for stem in caption_stems(image)}
    orphans = [
        entry.name
        for entry in sorted(subset.image_dir.iterdir(), key=lambda p: p.name)
        if entry.suffix.lower() in extensions and not entry.name.startswith(".")
        and entry.is_file() and entry.stem not in owned
    ]  # fmt: skip
    if orphans:
        names = ", ".join(orphans[:5]) + (f" and {len(orphans) - 5} more" if len(orphans) > 5 else "")
        problems.warning(
            subset.image_dir,
            f"{len(orphans)} caption file(s) have no image of their name beside them: {names}. They are not "
            "used; delete them, or bring their images back.",
        )


def _report_missing_captions(
    subset: SubsetConfig, missing: list[Path], total: int, problems: Problems
) -> None:
    """Images without a caption file. Those with a caption under another common extension stop
    training (sd-scripts would train them on the class tokens alone, without a word), unless the
    subset says ignore_other_captions = true."""
    ext = subset.caption_extension
    others = other_caption_files(missing, ext)
    if others and not subset.ignore_other_captions:
        e, found = max(others.items(), key=lambda kv: len(kv[1]))
        if len(missing) == total:
            fix = f'set caption_extension = "{e}" (sd-scripts\' default is .caption; on the command line --caption_extension {e})'
        else:
            fix = f"give them {ext} names like the other {total - len(missing)} caption(s) of this folder, e.g. {found[0].stem}{ext}"
        tokens = f"the class tokens '{subset.class_tokens}'" if subset.class_tokens else "no caption"
        problems.error(
            subset.image_dir,
            f"{len(found)} of {total} image(s) have no {ext} caption file but a {e} file beside them "
            f"(e.g. {found[0].stem}{e}), so they would train on {tokens} alone: {fix}. To train them on "
            "the class tokens on purpose, set ignore_other_captions = true.",
        )
        return
    if subset.class_tokens is None:
        problems.error(
            subset.image_dir,
            f"{len(missing)} image(s) have no caption file ({ext}) and the subset has no class_tokens: "
            "add caption files or set class_tokens.",
        )
    else:
        problems.note(
            subset.image_dir,
            f"{len(missing)} image(s) have no {ext} file; they use the class tokens "
            f"'{subset.class_tokens}' as caption",
        )


def _metadata_images(
    subset: SubsetConfig, problems: Problems
) -> list[tuple[Path, str | None, str, Path | None]]:
    meta_path = subset.metadata_file
    if not meta_path.is_file():
        problems.error(meta_path, "metadata_file not found. Check the path.")
        return []
    try:
        metadata = load_metadata(meta_path)
    except CaptionError as e:
        problems.error(meta_path, e.reason)
        return []
    out = []
    for key, entry in metadata.items():
        image = _find_metadata_image(key, subset.image_dir)
        if image is None:
            where = f" or in {subset.image_dir}" if subset.image_dir else ""
            problems.error(meta_path, f"no image for the entry '{key}' (looked for it as a path{where}).")
            continue
        if not isinstance(entry, dict):
            problems.error(meta_path, f'entry \'{key}\' must be {{"caption": ..., "tags": ...}}.')
            continue
        out.append((image, metadata_caption(entry, subset), "metadata", meta_path))
    if not metadata:
        problems.error(meta_path, "metadata file has no entries.")
    return out


def _find_metadata_image(key: str, image_dir: Path | None) -> Path | None:
    direct = Path(key)
    if direct.is_file():
        return direct
    if image_dir is not None:
        for ext in IMAGE_EXTENSIONS + tuple(e.upper() for e in IMAGE_EXTENSIONS):
            candidate = image_dir / (key + ext)
            if candidate.is_file():
                return candidate
        candidate = image_dir / key
        if candidate.is_file():
            return candidate
    return None


def subset_records(subset: SubsetConfig, problems: Problems, verify_images: bool = True) -> list[ImageRecord]:
    """The usable images of one subset with their raw captions; every bad file goes to `problems`."""
    if subset.conditioning_data_dir is not None:
        problems.note(
            subset.conditioning_data_dir,
            "conditioning_data_dir is for ControlNet training; LoRA training ignores it",
        )
    if subset.is_fine_tuning:
        found = _metadata_images(subset, problems)
    elif subset.image_dir is not None:
        found = _dreambooth_images(subset, problems)
    else:
        return []
    infos = _probe_all([f[0] for f in found], verify_images)
    records = []
    for (path, caption, source, cap_file), info in zip(found, infos):
        if isinstance(info, ImageReadError):
            problems.error(path, str(info))
            continue
        if caption is None:
            continue  # problem already reported
        record = ImageRecord(path, subset, caption, source, info.size, subset.num_repeats, cap_file)
        record.notes = list(info.notes)
        if info.has_alpha:
            if subset.alpha_mask:
                record.notes.append("transparency used as the loss mask")
            else:
                bg = subset.alpha_background
                record.notes.append(
                    f"transparent parts filled with colour {bg}; set alpha_mask = true to leave them out of the loss"
                )
        if subset.face_crop_aug_range is not None:
            record.face = face_box(path)
        for note in record.notes:
            problems.note(path, note)
        records.append(record)
    if not found and not problems.for_path(subset.image_dir or subset.metadata_file):
        kind = "regularization folder" if subset.is_reg else "image folder"
        exts = ", ".join(e.lstrip(".") for e in IMAGE_EXTENSIONS)
        problems.error(
            subset.image_dir or subset.metadata_file,
            f"{kind} has no images ({exts}). Add images or remove the folder from the dataset.",
        )
    return records


def assign_buckets(records: list[ImageRecord], selector: BucketSelector, problems: Problems) -> None:
    """Choose each image's bucket; images that would be ruined (tiny, or mostly cropped away) are errors."""
    for r in records:
        w, h = r.size
        choice = selector.select(w, h)
        r.bucket = choice
        bw, bh = choice.reso
        if bw < 1 or bh < 1 or bw < selector.steps or bh < selector.steps:
            problems.error(
                r.path,
                f"image is too small: {w}x{h} gives a bucket of {bw}x{bh} "
                f"(bucket sides are multiples of {selector.steps}). Use a larger image or remove it.",
            )
            continue
        rw, rh = choice.resized_size
        scale = max(rw / w, rh / h)
        lost = 1.0 - (bw * bh) / (rw * rh)
        if scale > UPSCALE_ERROR:
            problems.error(
                r.path,
                f"image is only {w}x{h} pixels: it would be enlarged {scale:.0f} times to fill the "
                f"{bw}x{bh} bucket. Use a larger image or remove it.",
            )
        elif scale > UPSCALE_WARN:
            problems.warning(
                r.path, f"{w}x{h} is enlarged {scale:.1f} times to {bw}x{bh}; it will look soft."
            )
        if lost > CROP_ERROR:
            problems.error(
                r.path,
                f"aspect ratio {_ratio(w, h)} ({w}x{h}) is far from every bucket (nearest {bw}x{bh}): covering "
                f"the bucket cuts away {_percent(lost)} of the image. Crop the image to the part you want, or remove it.",
            )
        elif lost > CROP_WARN:
            problems.warning(
                r.path, f"{w}x{h} in bucket {bw}x{bh}: {_percent(lost)} of the image is cut away."
            )


def _percent(x: float) -> str:
    return f"{x:.1%}" if x > 0.99 else f"{x:.0%}"


def _ratio(w: int, h: int) -> str:
    return f"{w / h:.3g}:1" if w >= h else f"1:{h / w:.3g}"


def loop_regularization(records: list[ImageRecord]) -> None:
    """Repeat regularization images until they match the training images x repeats (sd-scripts:
    first pass registers each reg image with its repeats, later passes add one repeat at a time)."""
    train = sum(r.num_repeats for r in records if not r.is_reg)
    reg = [r for r in records if r.is_reg]
    if not reg:
        return
    used: list[ImageRecord] = []
    n = 0
    first = True
    while n < train:
        for r in reg:
            if first:
                used.append(r)
                n += r.num_repeats
            else:
                r.num_repeats += 1
                n += 1
            if n >= train:
                break
        first = False
    unused = {id(r) for r in reg} - {id(r) for r in used}
    records[:] = [r for r in records if id(r) not in unused]


def split_validation(records: list[ImageRecord], fraction: float, seed: int, part: str) -> list[ImageRecord]:
    """Keep the training or the validation part of each subset's images (regularization images
    always train). The choice depends only on the seed and the file names."""
    if fraction <= 0:
        return records if part == "train" else []
    by_subset: dict[int, list[ImageRecord]] = {}
    for r in records:
        if not r.is_reg:
            by_subset.setdefault(id(r.subset), []).append(r)
    validation = set()
    for group in by_subset.values():
        names = sorted(group, key=lambda r: r.path.name)
        random.Random(f"lorakit-validation:{seed}").shuffle(names)
        n = min(len(names), max(1, math.floor(len(names) * fraction + 0.5)))
        validation.update(id(r) for r in names[:n])
    if part == "train":
        return [r for r in records if id(r) not in validation]
    return [r for r in records if id(r) in validation]
