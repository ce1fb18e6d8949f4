"""Aspect-ratio buckets, computed exactly as sd-scripts does (`make_bucket_resolutions`,
`BucketManager.select_bucket`), so a dataset lands in the same buckets as there.

`resolution` is a maximum *area*: with resolution 512 a 512x768 image goes to a smaller bucket
such as 448x640 (sd-scripts issue #543). The check report shows this per image.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np
from PIL import Image

PIL_FILTERS = {
    "lanczos": Image.Resampling.LANCZOS,
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "linear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "cubic": Image.Resampling.BICUBIC,
    "area": Image.Resampling.BOX,
    "box": Image.Resampling.BOX,
}


def make_bucket_resolutions(
    max_reso: tuple[int, int], min_size: int = 256, max_size: int = 1024, divisible: int = 64
) -> list[tuple[int, int]]:
    """The predefined buckets: the square of the resolution's area, and for each width from
    `min_size` to `max_size` the tallest height that keeps the area (both orientations)."""
    max_area = max_reso[0] * max_reso[1]
    resos = set()
    side = int(math.sqrt(max_area) // divisible) * divisible
    resos.add((side, side))
    width = min_size
    while width <= max_size:
        height = min(max_size, int((max_area // width) // divisible) * divisible)
        if height >= min_size:
            resos.add((width, height))
            resos.add((height, width))
        width += divisible
    return sorted(resos)


@dataclass(frozen=True)
class BucketChoice:
    reso: tuple[int, int]  # bucket (width, height): the size the model trains on
    resized_size: tuple[int, int]  # image size after scaling, before the crop
    ar_error: float  # bucket aspect ratio minus image aspect ratio


class BucketSelector:
    """Chooses the bucket of each image. Without `no_upscale` the bucket is the predefined one
    with the nearest aspect ratio and the image is scaled to cover it; with `no_upscale` the
    bucket is made from the image itself (shrunk only when its area exceeds the resolution's)."""

    def __init__(
        self,
        resolution: tuple[int, int],
        min_size: int = 256,
        max_size: int = 1024,
        steps: int = 64,
        no_upscale: bool = False,
        enable_bucket: bool = True,
    ):
        self.no_upscale = no_upscale and enable_bucket
        self.max_area = resolution[0] * resolution[1]
        self.steps = steps
        if not enable_bucket:
            self.resos = [tuple(resolution)]  # one bucket: the resolution itself
        elif not self.no_upscale:
            self.resos = make_bucket_resolutions(resolution, min_size, max_size, steps)
        else:
            self.resos = []
        self._resos_set = set(self.resos)
        self._ratios = np.array([w / h for w, h in self.resos]) if self.resos else None

    def _round(self, x: float) -> int:
        x = int(x + 0.5)
        return x - x % self.steps

    def select(self, width: int, height: int) -> BucketChoice:
        aspect = width / height
        if not self.no_upscale:
            reso = (width, height)
            if reso not in self._resos_set:
                # first of the sorted buckets with the smallest aspect-ratio error (numpy argmin)
                reso = self.resos[int(np.abs(self._ratios - aspect).argmin())]
            if aspect > reso[0] / reso[1]:  # wider than the bucket: match heights
                scale = reso[1] / height
            else:
                scale = reso[0] / width
            resized = (int(width * scale + 0.5), int(height * scale + 0.5))
        else:
            if width * height > self.max_area:
                rw = math.sqrt(self.max_area * aspect)
                rh = self.max_area / rw
                bw = self._round(rw)
                bh_for_w = self._round(bw / aspect)
                bh = self._round(rh)
                bw_for_h = self._round(bh * aspect)
                err_w = abs(bw / bh_for_w - aspect) if bh_for_w else math.inf
                err_h = abs(bw_for_h / bh - aspect) if bh else math.inf
                if err_w < err_h:
                    resized = (bw, int(bw / aspect + 0.5))
                else:
                    resized = (int(bh * aspect + 0.5), bh)
            else:
                resized = (width, height)
            reso = (resized[0] - resized[0] % self.steps, resized[1] - resized[1] % self.steps)
        ar_error = reso[0] / reso[1] - aspect if reso[1] else math.inf
        return BucketChoice(tuple(reso), tuple(resized), ar_error)


def crop_offset(resized: tuple[int, int], reso: tuple[int, int], random_crop: bool, rng: random.Random):
    """(left, top) of the bucket-sized window in the resized image: centred, or random."""
    out = []
    for have, want in zip(resized, reso):
        extra = max(have - want, 0)
        out.append(rng.randint(0, extra) if random_crop else extra // 2)
    return tuple(out)


def resize_and_crop(
    rgb: np.ndarray,
    mask: np.ndarray | None,
    choice: BucketChoice,
    offset: tuple[int, int],
    interpolation: str | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Scale to `choice.resized_size`, then cut the bucket at `offset`.

    Default filter as sd-scripts: area averaging when shrinking both sides, Lanczos otherwise.
    """
    h, w = rgb.shape[:2]
    rw, rh = choice.resized_size
    if (w, h) != (rw, rh):
        if interpolation is None:
            resample = Image.Resampling.BOX if (w > rw and h > rh) else Image.Resampling.LANCZOS
        else:
            resample = PIL_FILTERS[interpolation]
        rgb = np.asarray(Image.fromarray(rgb).resize((rw, rh), resample))
        if mask is not None:
            mask = np.asarray(Image.fromarray(mask, "F").resize((rw, rh), Image.Resampling.BILINEAR))
    left, top = offset
    bw, bh = choice.reso
    rgb = rgb[top : top + bh, left : left + bw]
    if mask is not None:
        mask = np.clip(mask[top : top + bh, left : left + bw], 0.0, 1.0)
    if rgb.shape[:2] != (bh, bw):
        raise AssertionError(f"internal error: crop {rgb.shape[:2]} is not the bucket {(bh, bw)}")
    return np.ascontiguousarray(rgb), mask
