"""A label font that draws Chinese, Japanese and Korean as well as Latin.

Grid labels hold file names and prompts, which are often not English. Pillow's built-in font has
Latin only (CJK comes out as boxes), so lorakit depends on `manimgx-fonts-cjk`: Noto Sans CJK
(SIL Open Font License), one file covering all four scripts. If it is missing, a CJK font of the
system is used; failing that, Pillow's font with a warning.
"""

from __future__ import annotations

import logging
import os
from functools import cache
from pathlib import Path

from PIL import ImageFont

log = logging.getLogger(__name__)

FONT_ENV = "LORAKIT_FONT"  # a font file to use instead

# Faces of common CJK fonts on Windows, macOS and Linux, best first.
SYSTEM_FONTS = (
    "C:/Windows/Fonts/msyh.ttc",
    "C:/Windows/Fonts/msyh.ttf",
    "C:/Windows/Fonts/simhei.ttf",
    "C:/Windows/Fonts/meiryo.ttc",
    "C:/Windows/Fonts/malgun.ttf",
    "/System/Library/Fonts/PingFang.ttc",
    "/System/Library/Fonts/Hiragino Sans GB.ttc",
    "/Library/Fonts/Arial Unicode.ttf",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/google-noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/wenquanyi/wqy-microhei/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",
)


def _packaged_font() -> Path | None:
    try:
        import manimgx_fonts_cjk
    except ImportError:
        return None
    folder = Path(manimgx_fonts_cjk.__file__).parent
    found = sorted(folder.glob("*.tt[cf]")) + sorted(folder.glob("*.otf"))
    return found[0] if found else None


def _open(path: Path, size: int) -> ImageFont.FreeTypeFont:
    """The Simplified Chinese face of a collection if it has one (most users write Chinese; the
    faces differ only in a few glyph shapes), at regular weight for a variable font."""
    font = ImageFont.truetype(str(path), size)
    for index in range(1, 16):
        try:
            face = ImageFont.truetype(str(path), size, index=index)
        except OSError:
            break
        if face.getname()[0].endswith(" SC"):
            font = face
            break
    try:
        if b"Regular" in font.get_variation_names():
            font.set_variation_by_name("Regular")
    except (OSError, AttributeError):
        pass  # not a variable font, or FreeType without variation support
    return font


@cache
def font_path() -> Path | None:
    """The CJK-capable font file lorakit draws labels with, or None if there is none."""
    chosen = os.environ.get(FONT_ENV)
    if chosen:
        if Path(chosen).is_file():
            return Path(chosen)
        log.warning("%s=%s: no such font file; using the default font", FONT_ENV, chosen)
    packaged = _packaged_font()
    if packaged:
        return packaged
    for candidate in SYSTEM_FONTS:
        if Path(candidate).is_file():
            return Path(candidate)
    log.warning(
        "No font with Chinese/Japanese/Korean characters found: such labels will show as boxes. "
        "Install one with 'pip install manimgx-fonts-cjk', or set %s to a font file.",
        FONT_ENV,
    )
    return None


@cache
def label_font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    path = font_path()
    if path is not None:
        try:
            return _open(path, size)
        except OSError as e:
            log.warning("cannot read font %s (%s); using the default font", path, e)
    return ImageFont.load_default(size)
