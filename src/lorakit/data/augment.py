"""Image augmentations of sd-scripts: `flip_aug`, `color_aug` and `face_crop_aug_range`.

Every random choice comes from the `random.Random` passed in, which the dataset derives from
(seed, epoch, position), so a resumed run augments each image exactly as the first run did.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
from PIL import Image

HUE_SHIFT_LIMIT = 8 / 180  # sd-scripts: +-8 on OpenCV's 0..180 hue scale
GAMMA_RANGE = (0.95, 1.05)


def flip(rgb: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(rgb[:, ::-1])


def color_aug(rgb: np.ndarray, rng: random.Random) -> np.ndarray:
    """One time in three: a small hue shift or a small gamma change (never both)."""
    if rng.random() > 0.33:
        return rgb
    if rng.random() > 0.5:
        hsv = np.asarray(Image.fromarray(rgb).convert("HSV")).copy()
        shift = round(rng.uniform(-HUE_SHIFT_LIMIT, HUE_SHIFT_LIMIT) * 256)
        hsv[..., 0] = ((hsv[..., 0].astype(np.int16) + shift) % 256).astype(np.uint8)
        return np.asarray(Image.fromarray(hsv, "HSV").convert("RGB"))
    gamma = rng.uniform(*GAMMA_RANGE)
    out = 255.0 * (rgb.astype(np.float32) / 255.0) ** gamma
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def face_box(path: Path) -> tuple[int, int, int, int] | None:
    """Face centre and size from a file name `name_cx_cy_w_h.png` (sd-scripts' face-crop naming)."""
    tokens = path.stem.split("_")
    if len(tokens) < 5:
        return None
    try:
        cx, cy, w, h = (int(t) for t in tokens[-4:])
    except ValueError:
        return None
    return (cx, cy, w, h) if w > 0 and h > 0 else None


def face_crop(
    rgb: np.ndarray,
    mask: np.ndarray | None,
    face: tuple[int, int, int, int],
    target: tuple[int, int],
    face_range: tuple[float, float],
    random_crop: bool,
    rng: random.Random,
) -> tuple[np.ndarray, np.ndarray | None, tuple[int, int], tuple[int, int]]:
    """Scale so the face fills `face_range` of the shorter target side, then cut `target` around it.

    Returns the image and mask of size `target`, the scaled size and the crop's (left, top).
    """
    tw, th = target
    height, width = rgb.shape[:2]
    cx, cy, fw, fh = face
    face_size = max(fw, fh)
    short = min(tw, th)
    min_scale = max(th / height, tw / width)
    min_scale = min(1.0, max(min_scale, short / (face_size * face_range[1])))
    max_scale = min(1.0, max(min_scale, short / (face_size * face_range[0])))
    scale = min_scale if min_scale >= max_scale else rng.uniform(min_scale, max_scale)
    scale = max(scale, th / height, tw / width)  # never smaller than the target
    nw, nh = max(int(width * scale + 0.5), tw), max(int(height * scale + 0.5), th)
    if (nw, nh) != (width, height):
        resample = Image.Resampling.BOX if scale < 1 else Image.Resampling.LANCZOS
        rgb = np.asarray(Image.fromarray(rgb).resize((nw, nh), resample))
        if mask is not None:
            mask = np.asarray(Image.fromarray(mask, "F").resize((nw, nh), Image.Resampling.BILINEAR))
    cx, cy = int(cx * scale + 0.5), int(cy * scale + 0.5)
    offsets = []
    for want, have, centre in ((tw, nw, cx), (th, nh, cy)):
        p = centre - want // 2
        if random_crop:
            spread = max(have - centre, centre)
            p += rng.randint(0, spread) + rng.randint(0, spread) - spread
        elif face_range[0] != face_range[1] and face_size > short // 10 and face_size >= 40:
            p += rng.randint(-face_size // 20, face_size // 20)
        offsets.append(max(0, min(p, have - want)))
    left, top = offsets
    rgb = np.ascontiguousarray(rgb[top : top + th, left : left + tw])
    if mask is not None:
        mask = np.clip(mask[top : top + th, left : left + tw], 0.0, 1.0)
    return rgb, mask, (nw, nh), (left, top)
