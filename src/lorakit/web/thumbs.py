"""Picture thumbnails for the dataset pages, cached in the workspace.

A thumbnail is made once per picture version (its real path, size and modification time are in
the cache key) and kept as a small JPEG under `WORKSPACE/.lorakit-cache/thumbs/`, so a dataset of
thousands of pictures scrolls from the cache after the first look. Pictures are read as training
reads them (EXIF orientation applied, transparency on white).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from PIL import Image, ImageOps

from ..data.images import ImageReadError, open_image
from ..utils.files import atomic_path
from .errors import WebError

CACHE_DIR = ".lorakit-cache/thumbs"
SIZES = (96, 160, 256, 512)


def thumbnail(workspace_root: Path, picture: Path, size: int) -> tuple[Path, bool]:
    """(the cached JPEG, whether it was in the cache already)."""
    if size not in SIZES:
        raise WebError(f"thumbnail size {size}: use one of {', '.join(map(str, SIZES))}.")
    stat = picture.stat()
    key = hashlib.sha1(f"{picture.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{size}".encode()).hexdigest()
    path = workspace_root / CACHE_DIR / key[:2] / f"{key}.jpg"
    if path.is_file():
        return path, True
    try:
        with open_image(picture) as image:
            image = ImageOps.exif_transpose(image)
            image.thumbnail((size, size), Image.Resampling.LANCZOS)
            if image.mode in ("RGBA", "LA", "P"):
                image = image.convert("RGBA")
                flat = Image.new("RGB", image.size, "white")
                flat.paste(image, mask=image.getchannel("A"))
                image = flat
            image = image.convert("RGB")
    except (ImageReadError, OSError) as e:
        raise WebError(f"{picture.name}: no thumbnail ({e}).") from e
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        image.save(tmp, format="JPEG", quality=85)
    return path, False
