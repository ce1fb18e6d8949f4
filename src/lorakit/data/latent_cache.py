"""VAE latents encoded once, kept in memory or in sd-scripts' `.npz` files beside the images.

A disk cache entry is valid for the image *content* (sha256 of the file), the bucket, the resize
filter and background, and the VAE (a hash of its weights): a second run with other training
options reuses it, a changed image is encoded again alone, and a cache made with another VAE is
never used by mistake. sd-scripts' own files (no lorakit key) are read too, not encoded again.
Files keep sd-scripts' names and keys
(`<img>_{W:04d}x{H:04d}_sd.npz` / `_sdxl.npz`: latents, latents_flipped, alpha_mask,
original_size, crop_ltrb) plus `lorakit_key`, so sd-scripts can read them too.

The latents are the distribution's mean, not a random sample: a cache is reused every epoch, so
one frozen random draw is no better than the mean, and the mean makes the cache reproducible.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import DatasetError
from ..utils.files import atomic_path, sha256_file
from .dataset import DatasetGroup, prepare_image
from .records import ImageRecord

CACHE_VERSION = 1
_content_hashes: dict[tuple[str, int, int], str] = {}


@dataclass
class CachedLatents:
    latents: np.ndarray  # (C, H/f, W/f) float32, unscaled
    latents_flipped: np.ndarray | None
    alpha_mask: np.ndarray | None  # (H, W) float32 at bucket size
    original_size: tuple[int, int]  # (w, h)
    crop_ltrb: tuple[int, int, int, int]  # the bucket window in the scaled image


@dataclass
class LatentEntry:
    """A cached image: in memory, or a file read when the batch needs it."""

    memory: CachedLatents | None = None
    path: Path | None = None

    def load(self) -> CachedLatents:
        if self.memory is not None:
            return self.memory
        return read_npz(self.path)


@dataclass
class CacheStats:
    encoded: int = 0  # images run through the VAE in this call
    reused: int = 0  # images whose valid cache file was used
    foreign: int = 0  # of those, files sd-scripts wrote (no lorakit key)
    written: int = 0  # cache files written


def content_hash(path: Path) -> str:
    """sha256 of the file, remembered per (path, size, mtime) so a second call is free."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _content_hashes:
        _content_hashes[key] = sha256_file(path)
    return _content_hashes[key]


def module_fingerprint(module: torch.nn.Module) -> str:
    """Identity of a model part (a VAE, a text encoder): its class, config, dtype and every
    weight, so a disk cache made with other weights is never taken for this one."""
    h = hashlib.sha256(type(module).__name__.encode())
    config = getattr(module, "config", None)
    if config is not None:
        config = config.to_dict() if hasattr(config, "to_dict") else dict(config)
        h.update(json.dumps(config, sort_keys=True, default=str).encode())
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(str(tensor.dtype).encode())
        t = tensor.detach().cpu().contiguous()
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def downscale_factor(vae) -> int:
    return 2 ** (len(vae.config.block_out_channels) - 1)


def npz_path(image: Path, reso: tuple[int, int], sdxl: bool) -> Path:
    """sd-scripts' cache file name: `<image stem>_{W:04d}x{H:04d}_sd.npz` (or `_sdxl.npz`)."""
    return image.with_name(f"{image.stem}_{reso[0]:04d}x{reso[1]:04d}_{'sdxl' if sdxl else 'sd'}.npz")


def read_npz(path: Path) -> CachedLatents:
    with np.load(path, allow_pickle=False) as f:
        return CachedLatents(
            latents=f["latents"],
            latents_flipped=f["latents_flipped"] if "latents_flipped" in f else None,
            alpha_mask=f["alpha_mask"] if "alpha_mask" in f else None,
            original_size=tuple(int(x) for x in f["original_size"]),
            crop_ltrb=tuple(int(x) for x in f["crop_ltrb"]),
        )


def _entry_key(record: ImageRecord, vae_id: str) -> str:
    s = record.subset
    parts = [
        CACHE_VERSION,
        content_hash(record.path),
        record.bucket.reso,
        record.bucket.resized_size,
        s.resize_interpolation,
        s.alpha_background,
        s.alpha_mask,
        vae_id,
    ]
    return hashlib.sha256(repr(parts).encode()).hexdigest()


def _valid_file(
    path: Path, key: str, need_flip: bool, shape: tuple[int, ...], record: ImageRecord
) -> str | None:
    """ "lorakit" for a file of ours made from this image, bucket and VAE; "sd-scripts" for one
    sd-scripts wrote (it stores no key), trusted as sd-scripts trusts it: the latent shape, the
    flipped latents and the alpha mask where the run needs them, and not older than the image.
    None: encode again."""
    try:
        with np.load(path, allow_pickle=False) as f:
            if need_flip and "latents_flipped" not in f:
                return None
            if tuple(f["latents"].shape) != shape:
                return None
            if "lorakit_key" in f:
                return "lorakit" if str(f["lorakit_key"]) == key else None
            if record.subset.alpha_mask and "alpha_mask" not in f:
                return None
            if not {"original_size", "crop_ltrb"} <= set(f.files):
                return None
            return "sd-scripts" if path.stat().st_mtime >= record.path.stat().st_mtime else None
    except Exception:  # a damaged or foreign file is simply encoded again
        return None


def check_cacheable(group: DatasetGroup) -> None:
    """Latents freeze one crop and one colour per image; refuse options that need a new one each
    time (as sd-scripts does). flip_aug works: the flipped image is cached too."""
    bad = []
    for ds in group.datasets:
        for s in ds.config.subsets:
            opts = [o for o in ("color_aug", "random_crop") if getattr(s, o)]
            if s.face_crop_aug_range is not None:
                opts.append("face_crop_aug_range")
            if opts:
                bad.append(f"{s.name}: {', '.join(opts)}")
    if bad:
        raise DatasetError(
            "latent caching cannot be used with augmentations that change the image every time:\n  "
            + "\n  ".join(bad)
            + "\nTurn those options off, or do not cache latents. (flip_aug works with caching.)"
        )


@torch.no_grad()
def _encode(vae, images: list[np.ndarray]) -> np.ndarray:
    param = next(vae.parameters())
    x = torch.tensor(np.stack(images)).permute(0, 3, 1, 2).to(param.device, torch.float32)
    x = (x / 127.5 - 1.0).to(param.dtype)
    latents = vae.encode(x).latent_dist.mode().float()
    if not torch.isfinite(latents).all():
        raise DatasetError(
            "the VAE produced NaN/inf latents (a known problem of the SDXL VAE in fp16): "
            "use the VAE in float32 (--no_half_vae) or the fp16-fix VAE."
        )
    return latents.cpu().numpy()


def cache_latents(
    group: DatasetGroup,
    vae,
    *,
    sdxl: bool = False,
    to_disk: bool = False,
    batch_size: int = 1,
    progress=None,
) -> CacheStats:
    """Encode the images of `group` with `vae` and attach the results to it (`group.latents`).

    With `to_disk`, valid existing files are reused and new ones written atomically beside the
    images. `progress`, if given, is called with (done, total) after each VAE batch.
    """
    check_cacheable(group)
    vae_id = module_fingerprint(vae)
    factor = downscale_factor(vae)
    channels = vae.config.latent_channels
    stats = CacheStats()
    todo: dict[tuple[int, int], list[tuple[int, int, ImageRecord, str, Path | None]]] = {}
    seen_files: set[Path] = set()
    for d, i, r in group.records():
        need_flip = r.subset.flip_aug
        key = _entry_key(r, vae_id)
        path = npz_path(r.path, r.bucket.reso, sdxl) if to_disk else None
        if path is not None and path in seen_files:  # the same image in two subsets: one file
            group.latents[(d, i)] = LatentEntry(path=path)
            continue
        shape = (channels, r.bucket.reso[1] // factor, r.bucket.reso[0] // factor)
        if path is not None:
            seen_files.add(path)
            origin = _valid_file(path, key, need_flip, shape, r) if path.is_file() else None
            if origin is not None:
                group.latents[(d, i)] = LatentEntry(path=path)
                stats.reused += 1
                stats.foreign += origin == "sd-scripts"
                continue
        todo.setdefault(r.bucket.reso, []).append((d, i, r, key, path))
    total = sum(len(v) for v in todo.values())
    done = 0
    for items in todo.values():
        for k in range(0, len(items), batch_size):
            chunk = items[k : k + batch_size]
            samples = [
                prepare_image(r, random.Random(0), flipped=False, augment=False) for _, _, r, _, _ in chunk
            ]
            latents = _encode(vae, [s.rgb for s in samples])
            flipped = None
            if any(r.subset.flip_aug for _, _, r, _, _ in chunk):
                flipped = _encode(vae, [np.ascontiguousarray(s.rgb[:, ::-1]) for s in samples])
            for j, ((d, i, r, key, path), s) in enumerate(zip(chunk, samples)):
                bw, bh = r.bucket.reso
                left, top = s.crop_left_top
                entry = CachedLatents(
                    latents=latents[j],
                    latents_flipped=flipped[j] if flipped is not None and r.subset.flip_aug else None,
                    alpha_mask=s.mask,
                    original_size=s.original_size,
                    crop_ltrb=(left, top, left + bw, top + bh),
                )
                if path is not None:
                    _write_npz(path, entry, key)
                    stats.written += 1
                    group.latents[(d, i)] = LatentEntry(path=path)
                else:
                    group.latents[(d, i)] = LatentEntry(memory=entry)
                stats.encoded += 1
            done += len(chunk)
            if progress is not None:
                progress(done, total)
    return stats


def _write_npz(path: Path, entry: CachedLatents, key: str) -> None:
    arrays = {
        "latents": entry.latents.astype(np.float32),
        "original_size": np.array(entry.original_size, dtype=np.int64),
        "crop_ltrb": np.array(entry.crop_ltrb, dtype=np.int64),
        "lorakit_key": np.array(key),
    }
    if entry.latents_flipped is not None:
        arrays["latents_flipped"] = entry.latents_flipped.astype(np.float32)
    if entry.alpha_mask is not None:
        arrays["alpha_mask"] = entry.alpha_mask.astype(np.float32)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)
