"""Small generated images, captions and folder trees for the dataset tests."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
from PIL import Image

SMALL = dict(enable_bucket=True, min_bucket_reso=32, max_bucket_reso=128, bucket_reso_steps=16)


def noise_image(path: Path, size: tuple[int, int], seed: int = 0, mode: str = "RGB", **save) -> Path:
    """A random-pixel image of `size` (w, h), so that every crop and flip is distinguishable."""
    rng = np.random.default_rng(seed)
    w, h = size
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    a = rng.integers(0, 256, (h, w, channels), dtype=np.uint8)
    if mode == "RGBA":
        a[..., 3] = 255
        a[:, : w // 2, 3] = 0  # left half transparent
    if channels == 1:
        a = a[..., 0]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a, mode).save(path, **save)
    return path


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under `root` with its content hash (or link target) and mtime: a test compares
    two snapshots to prove that nothing was written, changed or added."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = os.lstat(p)
            if p.is_symlink():
                out[str(p)] = ("link", os.readlink(p), st.st_mtime_ns)
            elif p.is_dir():
                out[str(p)] = ("dir", st.st_mtime_ns)
            else:
                out[str(p)] = ("file", hashlib.sha256(p.read_bytes()).hexdigest(), st.st_mtime_ns)
    return out
