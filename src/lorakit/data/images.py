"""Reading images the way a photo viewer shows them, as 8-bit RGB, whatever the file holds.

EXIF orientation is applied (a phone photo is trained upright), 16-bit images are scaled (not
clipped to white), palette transparency and alpha are composited on a background colour (or
kept as a loss mask), CMYK becomes RGB. A file that cannot be decoded is reported with the
reason before training starts, never discovered in the middle of an epoch.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError, features

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
if features.check("avif"):
    IMAGE_EXTENSIONS += (".avif",)
else:  # pragma: no cover - depends on how Pillow was built
    try:
        import pillow_avif  # noqa: F401

        IMAGE_EXTENSIONS += (".avif",)
    except ImportError:
        pass
UNSUPPORTED_IMAGE_EXTENSIONS = tuple(
    e
    for e in (".gif", ".tif", ".tiff", ".heic", ".heif", ".jxl", ".jfif", ".psd", ".svg", ".avif", ".ico")
    if e not in IMAGE_EXTENSIONS
)
_FORMAT_EXTENSIONS = {
    "PNG": {".png"},
    "JPEG": {".jpg", ".jpeg"},
    "WEBP": {".webp"},
    "BMP": {".bmp"},
    "AVIF": {".avif"},
}
_SIXTEEN_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I"}


class ImageReadError(Exception):
    """A file that is not a usable image; the message is the plain reason."""


@dataclass
class ImageInfo:
    size: tuple[int, int]  # (width, height) as trained: after EXIF orientation
    mode: str
    format: str | None
    has_alpha: bool
    notes: list[str] = field(default_factory=list)


def open_image(path: Path) -> Image.Image:
    try:
        if path.stat().st_size == 0:
            raise ImageReadError("file is empty (0 bytes); copy or download it again")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # big but trainable
            return Image.open(path)
    except ImageReadError:
        raise
    except UnidentifiedImageError:
        raise ImageReadError("not a readable image: the content is damaged or not an image format") from None
    except Image.DecompressionBombError:
        raise ImageReadError(
            "too many pixels to be a training image; shrink it first (lorakit prep resize)"
        ) from None
    except OSError as e:
        raise ImageReadError(f"cannot be opened: {e.strerror or e}") from None


def _oriented_size(img: Image.Image) -> tuple[tuple[int, int], bool]:
    orientation = img.getexif().get(0x0112, 1)
    w, h = img.size
    rotated = orientation in (5, 6, 7, 8)
    return ((h, w) if rotated else (w, h)), orientation not in (1, None)


def _has_alpha(img: Image.Image) -> bool:
    return img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        img.mode in ("P", "L", "RGB") and "transparency" in img.info
    )


def probe_image(path: str | Path, verify: bool = True) -> ImageInfo:
    """Size and kind of an image; with `verify`, decode every pixel to catch truncated files."""
    path = Path(path)
    img = open_image(path)
    with img:
        try:
            size, oriented = _oriented_size(img)
            info = ImageInfo(size=size, mode=img.mode, format=img.format, has_alpha=_has_alpha(img))
            if verify:
                img.load()
        except OSError as e:
            raise ImageReadError(
                f"image is truncated or damaged ({e}); export or download it again"
            ) from None
        except Exception as e:  # decoders raise odd types (SyntaxError, ValueError) on bad data
            raise ImageReadError(f"image cannot be decoded ({type(e).__name__}: {e})") from None
    if oriented:
        info.notes.append("rotated upright as its EXIF orientation says")
    if img.mode == "CMYK":
        info.notes.append("CMYK image converted to RGB")
    elif img.mode in _SIXTEEN_BIT_MODES:
        info.notes.append("16-bit image scaled to 8 bits")
    if info.has_alpha:
        info.notes.append("has transparency")
    if img.format and path.suffix.lower() not in _FORMAT_EXTENSIONS.get(img.format, {path.suffix.lower()}):
        info.notes.append(f"the file is a {img.format} image named {path.suffix}")
    return info


def to_rgb_or_rgba(img: Image.Image) -> Image.Image:
    """Any Pillow mode -> "RGB" or "RGBA" without clipping 16-bit values or losing transparency."""
    if img.mode in _SIXTEEN_BIT_MODES:
        a = np.asarray(img)
        if a.dtype != np.uint8:
            # 16-bit samples: 65535 is white. Scale, never clip (clipping turns the image white).
            a = np.round(np.clip(a.astype(np.float64) / 257.0, 0, 255)).astype(np.uint8)
        return Image.fromarray(a, "L").convert("RGB")
    if img.mode == "F":
        a = np.asarray(img, dtype=np.float64)
        scale = 255.0 if a.max() <= 1.0 else 1.0
        return Image.fromarray(np.clip(a * scale, 0, 255).round().astype(np.uint8), "L").convert("RGB")
    if img.mode in ("RGB", "RGBA"):
        return img
    if _has_alpha(img):
        return img.convert("RGBA")
    return img.convert("RGB")


def load_image(
    path: str | Path,
    alpha_mask: bool = False,
    background: tuple[int, int, int] = (255, 255, 255),
) -> tuple[np.ndarray, np.ndarray | None]:
    """(H, W, 3) uint8 RGB and, with `alpha_mask`, an (H, W) float32 mask in [0, 1] (1 = train).

    Transparent pixels are always composited on `background`: sd-scripts drops alpha, which
    leaves whatever colour the editor stored under them (often black) in the training image.
    """
    path = Path(path)
    img = open_image(path)
    with img:
        try:
            img.load()
            img = ImageOps.exif_transpose(img)
            img = to_rgb_or_rgba(img)
        except ImageReadError:
            raise
        except Exception as e:
            raise ImageReadError(
                f"image is truncated or damaged ({e}); export or download it again"
            ) from None
    mask = None
    if img.mode == "RGBA":
        alpha = np.asarray(img.getchannel("A"), dtype=np.float32) / 255.0
        base = Image.new("RGBA", img.size, (*background, 255))
        rgb = np.asarray(Image.alpha_composite(base, img).convert("RGB"))
        if alpha_mask:
            mask = alpha
    else:
        rgb = np.asarray(img)
        if alpha_mask:
            mask = np.ones(rgb.shape[:2], dtype=np.float32)
    return np.ascontiguousarray(rgb), mask
