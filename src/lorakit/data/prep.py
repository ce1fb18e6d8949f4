"""`lorakit prep resize`: shrink images to a maximum area and crop them to multiples of a step
(or pad them to it, `pad`), into a new folder, with their caption files and every other non-image
file copied beside them. A caption is copied only with its image: one whose image could not be
read, or that has none, would be an orphan in the new folder.

Like sd-scripts' `tools/resize_images_to_resolution.py`, images are never enlarged; unlike it,
file names are kept (so captions still match), EXIF rotation is applied, transparency is kept in
PNG/WebP, a crop that cuts away much of a side is reported, and the source folder is never
written to.
"""

from __future__ import annotations

import math
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageOps

from ..errors import DatasetError
from ..utils.files import atomic_path
from .buckets import PIL_FILTERS
from .captions import COMMON_CAPTION_EXTENSIONS, caption_stems
from .images import IMAGE_EXTENSIONS, ImageReadError, open_image, to_rgb_or_rgba

CROP_REPORT = 0.2  # a crop that cuts more than this share of a side is reported (with --pad offered)
_LATENT_CACHE = re.compile(r"_\d{4}x\d{4}_sd(xl)?\.npz$|_te_outputs\.npz$")
_FORMATS = {"png": ("PNG", ".png"), "jpg": ("JPEG", ".jpg"), "webp": ("WEBP", ".webp")}
_SUFFIX_FORMAT = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".webp": "WEBP",
    ".bmp": "BMP",
    ".avif": "AVIF",
}


@dataclass
class ResizeResult:
    resized: list[tuple[Path, Path, tuple[int, int], tuple[int, int]]] = field(default_factory=list)
    copied: list[tuple[Path, Path]] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    cropped: list[tuple[Path, str]] = field(default_factory=list)  # crops above CROP_REPORT of a side


def target_size(
    size: tuple[int, int], max_size: tuple[int, int], divisible: int
) -> tuple[tuple[int, int], tuple[int, int]]:
    """(scaled size, final size): shrink to at most the area of `max_size` keeping the aspect
    ratio, then cut each side down to a multiple of `divisible`."""
    w, h = size
    max_area = max_size[0] * max_size[1]
    if w * h > max_area:
        s = math.sqrt(max_area / (w * h))
        w, h = max(int(w * s), 1), max(int(h * s), 1)
    return (w, h), (w - w % divisible, h - h % divisible)


def _is_inside(child: Path, parent: Path) -> bool:
    try:
        child.resolve().relative_to(parent.resolve())
        return True
    except ValueError:
        return False


def _plan_files(src: Path, dst: Path, fmt: str | None, result: ResizeResult) -> list[tuple[Path, Path, bool]]:
    """(source, destination, is_image) for every file to produce, walking subfolders."""
    jobs = []
    for root, dirs, files in os.walk(src, followlinks=False):
        root = Path(root)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for d in dirs:
            if (root / d).is_symlink():
                result.skipped.append((root / d, "linked folder not followed"))
        for name in sorted(files):
            path = root / name
            if name.startswith("."):
                continue
            if _LATENT_CACHE.search(name):
                result.skipped.append((path, "latent cache file (made again for the new sizes)"))
                continue
            out = dst / path.relative_to(src)
            is_image = path.suffix.lower() in IMAGE_EXTENSIONS
            if is_image and fmt:
                out = out.with_suffix(_FORMATS[fmt][1])
            jobs.append((path, out, is_image))
    return jobs


def resize_folder(
    src: str | Path,
    dst: str | Path,
    max_size: tuple[int, int] = (512, 512),
    divisible: int = 64,
    interpolation: str | None = None,
    fmt: str | None = None,
    background: tuple[int, int, int] = (255, 255, 255),
    overwrite: bool = False,
    pad: tuple[int, int, int] | None = None,
) -> ResizeResult:
    """Resize every image under `src` into `dst` (same subfolders and names). With `pad` (a
    colour), sides are padded up to the next multiple of `divisible` instead of cropped."""
    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise DatasetError(f"{src}: source folder not found.")
    if divisible < 1:
        raise DatasetError("--divisible must be 1 or more.")
    if fmt is not None and fmt not in _FORMATS:
        raise DatasetError(f"--format must be one of {', '.join(_FORMATS)}.")
    if _is_inside(dst, src):
        raise DatasetError(f"{dst} is inside the source folder {src}; choose a destination outside it.")
    result = ResizeResult()
    jobs = _plan_files(src, dst, fmt, result)
    outputs: dict[Path, Path] = {}
    for path, out, _ in jobs:
        if out in outputs:
            raise DatasetError(f"{path} and {outputs[out]} would both be written as {out}; rename one.")
        outputs[out] = path
    existing = [out for _, out, _ in jobs if out.exists()]
    if existing and not overwrite:
        raise DatasetError(
            f"{len(existing)} file(s) already exist in {dst} (e.g. {existing[0]}); "
            "choose an empty folder or add --overwrite."
        )
    written: set[tuple[Path, str]] = set()  # (folder, caption name) of every image written
    for path, out, is_image in jobs:
        if not is_image:
            continue
        try:
            old, new, crop = _resize_one(path, out, max_size, divisible, interpolation, background, pad)
        except ImageReadError as e:
            result.failed.append((path, str(e)))
            continue
        result.resized.append((path, out, old, new))
        written.update((path.parent, stem) for stem in caption_stems(path))
        if crop:
            result.cropped.append((path, crop))
    unread = {(p.parent, stem) for p, _ in result.failed for stem in caption_stems(p)}
    for path, out, is_image in jobs:
        if is_image:
            continue
        if path.suffix.lower() in COMMON_CAPTION_EXTENSIONS and (path.parent, path.stem) not in written:
            why = (
                "its image could not be read"
                if (path.parent, path.stem) in unread
                else "no image has its name"
            )
            result.skipped.append((path, f"caption not copied: {why}"))
            continue
        try:
            with atomic_path(out) as tmp:
                shutil.copy2(path, tmp)
        except OSError as e:
            result.failed.append((path, f"cannot be copied: {e.strerror or e}"))
            continue
        result.copied.append((path, out))
    return result


def _resize_one(path, out, max_size, divisible, interpolation, background, pad):
    """Write one image; returns (old size, new size, what a large crop cut away or "")."""
    img = open_image(path)
    with img:
        try:
            img.load()
            icc = img.info.get("icc_profile")
            img = to_rgb_or_rgba(ImageOps.exif_transpose(img))
        except Exception as e:  # truncated data raises OSError; other decoders other types
            raise ImageReadError(f"image is truncated or damaged ({e})") from None
    size = img.size
    (sw, sh), (cw, ch) = target_size(size, max_size, divisible)
    if (cw < 1 or ch < 1) and pad is None:
        raise ImageReadError(f"{size[0]}x{size[1]} is smaller than --divisible {divisible}")
    if (sw, sh) != size:
        if interpolation is None:
            resample = Image.Resampling.BOX  # area averaging: the sharpest clean shrink
        else:
            resample = PIL_FILTERS[interpolation]
        img = img.resize((sw, sh), resample)
    crop = ""
    if pad is not None:
        img = _letterbox(img, divisible, pad)
    else:
        left, top = (sw - cw) // 2, (sh - ch) // 2
        img = img.crop((left, top, left + cw, top + ch))
        cuts = [(1 - cw / sw, "width", sw, cw), (1 - ch / sh, "height", sh, ch)]
        crop = "; ".join(
            f"{share:.0%} of its {side} cut away ({a} -> {b} px)"
            for share, side, a, b in cuts
            if share > CROP_REPORT
        )
    fmt = _SUFFIX_FORMAT[out.suffix.lower()]
    if img.mode == "RGBA" and fmt in ("JPEG", "BMP"):
        base = Image.new("RGBA", img.size, (*background, 255))
        img = Image.alpha_composite(base, img).convert("RGB")
    kwargs = {"icc_profile": icc} if icc else {}
    if fmt in ("JPEG", "WEBP", "AVIF"):
        kwargs["quality"] = 95
    with atomic_path(out) as tmp:
        img.save(tmp, format=fmt, **kwargs)
    return size, img.size, crop


def _letterbox(img: Image.Image, divisible: int, colour: tuple[int, int, int]) -> Image.Image:
    """The image centred on a `colour` canvas whose sides are the next multiples of `divisible`."""
    w, h = img.size
    size = (-(-w // divisible) * divisible, -(-h // divisible) * divisible)
    canvas = Image.new(img.mode, size, (*colour, 255) if img.mode == "RGBA" else colour)
    canvas.paste(img, ((size[0] - w) // 2, (size[1] - h) // 2))
    return canvas


def parse_size(text: str) -> tuple[int, int]:
    """ "512x512", "768x512" or "512" -> (width, height)."""
    m = re.fullmatch(r"\s*(\d+)\s*(?:[xX*,]\s*(\d+))?\s*", text)
    if not m:
        raise DatasetError(f"'{text}' is not a size; write it like 512x512 (width x height).")
    w = int(m.group(1))
    h = int(m.group(2) or w)
    if w < 1 or h < 1:
        raise DatasetError(f"'{text}': width and height must be larger than 0.")
    return (w, h)
