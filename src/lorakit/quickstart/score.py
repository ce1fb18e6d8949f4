"""Does an image show a colour or a shape? Plain pixel statistics, no learned model.

The tiny model draws one plain shape on a plain background, so:

1. Background: the median colour of the 1-pixel frame around the image.
2. Foreground: pixels that differ from the background by more than `FOREGROUND_DISTANCE`
   (RGB distance, 0..441), cleaned of single stray pixels (a 3x3 opening).
3. Colour: each foreground pixel that is saturated and bright enough gets the colour whose hue
   band contains its hue (`HUE_BANDS`, degrees). The image "is" a colour when at least
   `MIN_SHARE` of its foreground pixels have it. An image with less than `MIN_FOREGROUND` of its
   area in the foreground shows nothing.
4. Shape, from each pixel's coverage (0 = background colour, 1 = shape colour; edges between):
   an upright triangle is bottom-heavy (vertical skewness -0.57, where circles and squares have
   0). Otherwise the corners decide: a square fills the four corner patches of its bounding box
   (each a quarter of the box's side), a circle leaves most of them empty (drawn: 0.3, a
   square 1.0). Corners, not the overall fill, because a model's squares have soft, wavy
   edges that lower the fill towards a circle's, while their corners stay full.
   Not skewed, empty corners and less than `CIRCLE_FILL` of the box filled: no shape.

These rules are deliberately strict about hue: magenta (300 degrees) must not be confused with
red (0) or blue (230), so a LoRA test that asks for magenta cannot pass on a reddish purple.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

FOREGROUND_DISTANCE = 60.0
MIN_FOREGROUND = 0.03
MIN_SHARE = 0.5
MIN_SATURATION = 0.35
MIN_VALUE = 0.25
# (low, high) hue in degrees; red wraps around 0
HUE_BANDS: dict[str, tuple[float, float]] = {
    "red": (340.0, 20.0),
    "yellow": (38.0, 70.0),
    "green": (95.0, 150.0),
    "cyan": (170.0, 200.0),
    "blue": (210.0, 250.0),
    "magenta": (280.0, 322.0),
}
TRIANGLE_SKEW = -0.3  # an upright triangle: -0.57; circles and squares: 0
SQUARE_CORNERS = 0.55  # coverage of the bounding box's corner patches; drawn square 1.0, circle 0.3
CIRCLE_FILL = 0.6  # a circle fills pi/4 = 0.79 of its bounding box


@dataclass(frozen=True)
class Reading:
    """What `read_image` saw: the share of foreground pixels per colour, and the fill ratio."""

    foreground: float  # share of the image area
    colour_shares: dict[str, float]
    fill: float  # foreground area / bounding-box area (0 when there is no foreground)
    skew: float  # vertical skewness of the foreground: about -0.57 for an upright triangle, 0 else
    corners: float  # mean coverage of the bounding box's four corner patches

    @property
    def colour(self) -> str | None:
        if self.foreground < MIN_FOREGROUND or not self.colour_shares:
            return None
        name, share = max(self.colour_shares.items(), key=lambda kv: kv[1])
        return name if share >= MIN_SHARE else None

    @property
    def shape(self) -> str | None:
        if self.foreground < MIN_FOREGROUND:
            return None
        if self.skew <= TRIANGLE_SKEW:
            return "triangle"
        if self.corners >= SQUARE_CORNERS:
            return "square"
        return "circle" if self.fill >= CIRCLE_FILL else None


def _rgb_array(image: Image.Image | np.ndarray) -> np.ndarray:
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    return image.astype(np.float32)


def _hsv(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hue in degrees, saturation and value in 0..1, for an [..., 3] array of 0..255 values."""
    x = rgb / 255.0
    high, low = x.max(-1), x.min(-1)
    delta = high - low
    safe = np.where(delta > 0, delta, 1.0)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    hue = np.where(
        high == r, ((g - b) / safe) % 6, np.where(high == g, (b - r) / safe + 2, (r - g) / safe + 4)
    )
    hue = np.where(delta > 0, hue * 60.0, 0.0)
    saturation = np.where(high > 0, delta / np.where(high > 0, high, 1.0), 0.0)
    return hue, saturation, high


def _spread(mask: np.ndarray) -> np.ndarray:
    """3x3 dilation."""
    padded = np.pad(mask, 1)
    out = np.zeros_like(mask)
    for dy in range(3):
        for dx in range(3):
            out |= padded[dy : dy + mask.shape[0], dx : dx + mask.shape[1]]
    return out


def _shrink(mask: np.ndarray) -> np.ndarray:
    """3x3 erosion."""
    return ~_spread(~mask)


def clean(mask: np.ndarray) -> np.ndarray:
    """Opening by reconstruction: drops specks that vanish under a 3x3 erosion, and gives back
    every pixel of the parts that survive (a triangle keeps its tip)."""
    kept = _shrink(mask)
    while True:
        grown = _spread(kept) & mask
        if (grown == kept).all():
            return kept
        kept = grown


def background_colour(rgb: np.ndarray) -> np.ndarray:
    frame = np.concatenate([rgb[0], rgb[-1], rgb[1:-1, 0], rgb[1:-1, -1]])
    return np.median(frame, axis=0)


def foreground_mask(image: Image.Image | np.ndarray) -> np.ndarray:
    rgb = _rgb_array(image)
    distance = np.sqrt(((rgb - background_colour(rgb)) ** 2).sum(-1))
    return clean(distance > FOREGROUND_DISTANCE)


def in_band(hue: np.ndarray, band: tuple[float, float]) -> np.ndarray:
    low, high = band
    return (hue >= low) & (hue <= high) if low <= high else (hue >= low) | (hue <= high)


def read_image(image: Image.Image | np.ndarray) -> Reading:
    rgb = _rgb_array(image)
    mask = foreground_mask(rgb)
    count = int(mask.sum())
    if count == 0:
        return Reading(0.0, {}, 0.0, 0.0, 0.0)
    hue, saturation, value = _hsv(rgb[mask])
    vivid = (saturation >= MIN_SATURATION) & (value >= MIN_VALUE)
    shares = {name: float((vivid & in_band(hue, band)).sum()) / count for name, band in HUE_BANDS.items()}
    # coverage of each pixel: 0 = background colour, 1 = the shape's colour (edges in between)
    background = background_colour(rgb)
    direction = np.median(rgb[mask], axis=0) - background
    alpha = ((rgb - background) @ direction) / max(float(direction @ direction), 1e-6)
    alpha = np.where(_spread(mask), np.clip(alpha, 0.0, 1.0), 0.0)
    solid = alpha >= 0.5
    if not solid.any():
        return Reading(count / mask.size, shares, 0.0, 0.0, 0.0)
    rows, cols = np.nonzero(solid)
    top, left = rows.min(), cols.min()
    height, width = rows.max() - top + 1, cols.max() - left + 1
    inside = alpha[top : top + height, left : left + width]
    kh, kw = max(1, round(height / 4)), max(1, round(width / 4))
    corners = np.mean(
        [
            inside[:kh, :kw].mean(),
            inside[:kh, -kw:].mean(),
            inside[-kh:, :kw].mean(),
            inside[-kh:, -kw:].mean(),
        ]
    )
    y = np.arange(alpha.shape[0], dtype=np.float64)[:, None]
    weight = alpha / alpha.sum()
    mean = (weight * y).sum()
    spread = np.sqrt((weight * (y - mean) ** 2).sum())
    skew = float((weight * (y - mean) ** 3).sum() / max(spread, 1e-6) ** 3)
    fill = float(alpha.sum() / (height * width))
    return Reading(count / mask.size, shares, fill, skew, float(corners))


def shows_colour(image: Image.Image | np.ndarray, colour: str) -> bool:
    """True when `colour` (a `HUE_BANDS` name) covers at least half of the foreground."""
    if colour not in HUE_BANDS:
        raise ValueError(f"unknown colour {colour!r}; the score knows {', '.join(HUE_BANDS)}")
    return read_image(image).colour == colour


def share_showing(images, colour: str) -> float:
    """The fraction of `images` that show `colour`."""
    images = list(images)
    return sum(shows_colour(im, colour) for im in images) / len(images) if images else 0.0
