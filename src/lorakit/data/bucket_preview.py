"""Which bucket each picture lands in and how much of it is cut away, picture by picture: the
choice `build_datasets` makes for training (the web UI's bucket preview shows it as a list).

Only image headers are read (no decoding), so a dataset of thousands of pictures answers fast;
`lorakit dataset check` remains the place that decodes every file.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from .buckets import crop_offset
from .build import build_datasets
from .check import load_any
from .problems import Problems


@dataclass(frozen=True)
class PictureBucket:
    path: Path
    subset: str
    is_reg: bool
    size: tuple[int, int]  # (width, height) as trained (after EXIF orientation)
    bucket: tuple[int, int]  # the size the model trains on
    resized: tuple[int, int]  # the picture scaled to cover the bucket, before the crop
    crop: tuple[int, int]  # (left, top) of the bucket in the scaled picture (centred crop)
    cut: float  # fraction of the scaled picture cut away by the crop (0 = nothing)


def bucket_preview(
    path: str | Path,
    reg_data_dir: str | Path | None = None,
    options: dict | None = None,
    resolution: tuple[int, int] = (512, 512),
) -> tuple[list[PictureBucket], Problems]:
    """Every picture of a train folder or dataset config with its bucket, and the problems found."""
    config = load_any(path, reg_data_dir, options)
    group = build_datasets(config, resolution=resolution, strict=False, verify_images=False)
    rng = random.Random(0)  # crop_offset takes one; a centred crop never draws from it
    out = []
    for ds in group.datasets:
        for r in ds.records:
            if r.bucket is None:
                continue
            (bw, bh), (rw, rh) = r.bucket.reso, r.bucket.resized_size
            out.append(
                PictureBucket(
                    path=r.path,
                    subset=r.subset.name,
                    is_reg=r.is_reg,
                    size=tuple(r.size),
                    bucket=(bw, bh),
                    resized=(rw, rh),
                    crop=crop_offset((rw, rh), (bw, bh), False, rng),
                    cut=max(0.0, 1.0 - (bw * bh) / (rw * rh)) if rw and rh else 0.0,
                )
            )
    return out, group.problems
