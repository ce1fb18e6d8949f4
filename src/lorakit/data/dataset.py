"""The dataset the training loop consumes: records in buckets, a reproducible order per epoch,
and batches of images (or cached latents) with their processed captions.

Randomness never comes from a global generator: the order of epoch `e` is drawn from
(seed, e) and each sample's augmentation and caption from (seed, e, batch, slot). A run resumed
at batch k of epoch e therefore sees exactly the batches the first run would have seen, and data
loader workers need no shared state.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import DatasetError
from .augment import color_aug, face_crop, flip
from .buckets import crop_offset, resize_and_crop
from .captions import process_caption
from .config import DatasetConfig
from .images import load_image
from .problems import Problems
from .records import ImageRecord


@dataclass
class Dataset:
    """One `[[datasets]]`: its records and its buckets (record indices, repeated)."""

    config: DatasetConfig
    resolution: tuple[int, int]
    records: list[ImageRecord]
    buckets: dict[tuple[int, int], list[int]]

    @property
    def batch_size(self) -> int:
        return self.config.batch_size

    @property
    def steps_per_epoch(self) -> int:
        return sum(math.ceil(len(items) / self.batch_size) for items in self.buckets.values())

    @property
    def uses_alpha_mask(self) -> bool:
        return any(s.alpha_mask for s in self.config.subsets)


@dataclass(frozen=True)
class BatchRef:
    """Which images form batch `index` of `epoch` (indices into `Dataset.records`)."""

    epoch: int
    index: int
    dataset: int
    reso: tuple[int, int]
    items: tuple[int, ...]


@dataclass
class Batch:
    """One training step's inputs. `latents` are the VAE's raw output (not yet multiplied by
    `vae.config.scaling_factor`), as in sd-scripts' cache files. Sizes are (height, width)."""

    captions: list[str]
    loss_weights: torch.Tensor  # (B,) 1.0, or prior_loss_weight for regularization images
    images: torch.Tensor | None  # (B, 3, H, W) in [-1, 1], when latents are not cached
    latents: torch.Tensor | None  # (B, C, H/f, W/f)
    alpha_masks: torch.Tensor | None  # (B, 1, H, W) in [0, 1]; only when a subset sets alpha_mask
    original_sizes_hw: torch.Tensor  # (B, 2) SDXL conditioning: size of the source image
    crop_top_lefts: torch.Tensor  # (B, 2) pixels cut from the top and left of the scaled image
    target_sizes_hw: torch.Tensor  # (B, 2) the bucket
    network_multiplier: float
    paths: list[Path]
    flipped: list[bool]
    is_reg: list[bool]
    custom_attributes: list[dict]
    epoch: int
    index: int


@dataclass
class DataState:
    """Where the data stood when a training state was saved; stored with the state for resume."""

    seed: int
    epoch: int  # the epoch in progress, counting from 1
    batches_done: int  # batches of that epoch already trained
    fingerprint: str  # changes when images, repeats, buckets or batch sizes change

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> DataState:
        return cls(**{k: d[k] for k in ("seed", "epoch", "batches_done", "fingerprint")})


@dataclass
class Sample:
    rgb: np.ndarray | None  # (H, W, 3) uint8, after crop, colour augmentation and flip
    mask: np.ndarray | None
    original_size: tuple[int, int]  # (w, h)
    crop_left_top: tuple[int, int]  # after the flip
    flipped: bool


def prepare_image(record: ImageRecord, rng: random.Random, flipped: bool, augment: bool = True) -> Sample:
    """Load, scale, crop (centre/random/face), colour-augment and flip one image for its bucket."""
    subset = record.subset
    rgb, mask = load_image(record.path, subset.alpha_mask, subset.alpha_background)
    h, w = rgb.shape[:2]
    choice = record.bucket
    if record.face is not None and subset.face_crop_aug_range is not None:
        rgb, mask, resized, (left, top) = face_crop(
            rgb, mask, record.face, choice.reso, subset.face_crop_aug_range, subset.random_crop, rng
        )
    else:
        resized = choice.resized_size
        left, top = crop_offset(resized, choice.reso, subset.random_crop, rng)
        rgb, mask = resize_and_crop(rgb, mask, choice, (left, top), subset.resize_interpolation)
    if augment and subset.color_aug:
        rgb = color_aug(rgb, rng)
    if flipped:
        rgb = flip(rgb)
        mask = None if mask is None else np.ascontiguousarray(mask[:, ::-1])
        left = resized[0] - left - choice.reso[0]
    return Sample(rgb, mask, (w, h), (left, top), flipped)


class DatasetGroup:
    """All datasets of a run. Build it with `build_datasets`."""

    def __init__(
        self,
        datasets: list[Dataset],
        problems: Problems,
        seed: int = 0,
        prior_loss_weight: float = 1.0,
        max_train_steps: int | None = None,
    ):
        self.datasets = datasets
        self.problems = problems
        self.seed = seed
        self.prior_loss_weight = prior_loss_weight
        self.max_train_steps = max_train_steps
        self.latents: dict[tuple[int, int], object] = {}  # (dataset, record) -> latent_cache.LatentEntry

    # ---- sizes -------------------------------------------------------------------------------
    @property
    def steps_per_epoch(self) -> int:
        """Batches per epoch: per bucket, ceil(images x repeats / batch size), summed."""
        return sum(ds.steps_per_epoch for ds in self.datasets)

    def __len__(self) -> int:
        return self.steps_per_epoch

    def records(self):
        """(dataset index, record index, record) of every image."""
        for d, ds in enumerate(self.datasets):
            for i, r in enumerate(ds.records):
                yield d, i, r

    @property
    def num_train_images(self) -> int:
        return sum(1 for _, _, r in self.records() if not r.is_reg)

    @property
    def num_reg_images(self) -> int:
        return sum(1 for _, _, r in self.records() if r.is_reg)

    def caption_sources(self) -> dict[str, int]:
        """Images per caption source ("file", "class_tokens", "metadata"), training and
        regularization together: what run.json keeps to show the captions were read."""
        return dict(sorted(Counter(r.caption_source for _, _, r in self.records()).items()))

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for ds in self.datasets:
            h.update(repr((ds.resolution, ds.batch_size)).encode())
            for r in ds.records:
                h.update(repr((str(r.path), r.num_repeats, r.bucket.reso, r.is_reg)).encode())
        return h.hexdigest()[:16]

    # ---- order -------------------------------------------------------------------------------
    def epoch_batches(self, epoch: int) -> list[BatchRef]:
        """The batches of `epoch` (counting from 1), in training order. Each batch comes from a
        single bucket of a single dataset; the order depends only on (seed, epoch)."""
        if epoch < 1:
            raise ValueError("epochs count from 1")
        rng = random.Random(f"lorakit-order:{self.seed}:{epoch}")
        batches = []
        for d, ds in enumerate(self.datasets):
            for reso in sorted(ds.buckets):
                items = list(ds.buckets[reso])
                rng.shuffle(items)
                for k in range(0, len(items), ds.batch_size):
                    batches.append((d, reso, tuple(items[k : k + ds.batch_size])))
        rng.shuffle(batches)
        return [BatchRef(epoch, i, d, reso, items) for i, (d, reso, items) in enumerate(batches)]

    def state(self, epoch: int, batches_done: int) -> DataState:
        return DataState(self.seed, epoch, batches_done, self.fingerprint())

    def resume_position(self, state: DataState | dict, strict: bool = True) -> tuple[int, int]:
        """(epoch, first batch) to continue from. With `strict`, a changed dataset is an error,
        because the saved position would point into a different order."""
        if isinstance(state, dict):
            state = DataState.from_dict(state)
        if strict and state.seed != self.seed:
            raise DatasetError(
                f"the seed changed since the training state was saved (saved with seed {state.seed}, "
                f"this run has seed {self.seed}): the same batch number would mean other images and "
                f"other noise. Resume with seed = {state.seed}, or start a new run."
            )
        if strict and state.fingerprint != self.fingerprint():
            raise DatasetError(
                "the dataset (images, repeats, buckets or batch size) changed since the training state "
                "was saved, so the saved position in the epoch means other images now. Resume with the "
                "same dataset, or start a new run."
            )
        epoch, done = state.epoch, state.batches_done
        if done >= self.steps_per_epoch:
            epoch, done = epoch + 1, 0
        return epoch, done

    # ---- loading -----------------------------------------------------------------------------
    def _sample_rng(self, ref: BatchRef, slot: int) -> random.Random:
        return random.Random(f"lorakit-sample:{self.seed}:{ref.epoch}:{ref.index}:{slot}")

    def caption(self, ref: BatchRef, slot: int, step: int | None = None) -> str:
        """The processed caption of one batch slot (the same every time it is asked for)."""
        ds = self.datasets[ref.dataset]
        record = ds.records[ref.items[slot]]
        rng = random.Random(f"lorakit-caption:{self.seed}:{ref.epoch}:{ref.index}:{slot}")
        if step is None:
            step = (ref.epoch - 1) * self.steps_per_epoch + ref.index
        return process_caption(record.caption, record.subset, rng, ref.epoch, step, self.max_train_steps)

    def load_batch(self, ref: BatchRef, step: int | None = None) -> Batch:
        """Everything the training step needs for `ref`. `step` (for token warm-up) defaults to
        the number of batches before this one."""
        ds = self.datasets[ref.dataset]
        use_latents = all((ref.dataset, i) in self.latents for i in ref.items)
        images, latents, masks = [], [], []
        originals, crops, flips, paths, captions, weights, regs, attrs = [], [], [], [], [], [], [], []
        for slot, i in enumerate(ref.items):
            record = ds.records[i]
            rng = self._sample_rng(ref, slot)
            flipped = record.subset.flip_aug and rng.random() < 0.5
            if use_latents:
                cached = self.latents[(ref.dataset, i)].load()
                if flipped and cached.latents_flipped is None:
                    raise DatasetError(
                        f"{record.path}: the latent cache has no flipped latents; cache again with flip_aug on."
                    )
                latents.append(torch.as_tensor(cached.latents_flipped if flipped else cached.latents))
                mask = cached.alpha_mask
                if mask is not None and flipped:
                    mask = np.ascontiguousarray(mask[:, ::-1])
                left, top = cached.crop_ltrb[:2]
                if flipped:
                    left = record.bucket.resized_size[0] - left - ref.reso[0]
                original = tuple(cached.original_size)
            else:
                sample = prepare_image(record, rng, flipped)
                images.append(torch.tensor(sample.rgb).permute(2, 0, 1).float() / 127.5 - 1.0)
                mask, (left, top), original = sample.mask, sample.crop_left_top, sample.original_size
            if ds.uses_alpha_mask:
                bw, bh = ref.reso
                masks.append(
                    torch.tensor(np.asarray(mask, np.float32)) if mask is not None else torch.ones(bh, bw)
                )
            originals.append((original[1], original[0]))
            crops.append((top, left))
            flips.append(flipped)
            paths.append(record.path)
            captions.append(self.caption(ref, slot, step))
            weights.append(self.prior_loss_weight if record.is_reg else 1.0)
            regs.append(record.is_reg)
            attrs.append(record.subset.custom_attributes)
        n = len(ref.items)
        return Batch(
            captions=captions,
            loss_weights=torch.tensor(weights, dtype=torch.float32),
            images=torch.stack(images) if images else None,
            latents=torch.stack(latents) if latents else None,
            alpha_masks=torch.stack(masks).unsqueeze(1) if masks else None,
            original_sizes_hw=torch.tensor(originals, dtype=torch.long),
            crop_top_lefts=torch.tensor(crops, dtype=torch.long),
            target_sizes_hw=torch.tensor([(ref.reso[1], ref.reso[0])] * n, dtype=torch.long),
            network_multiplier=ds.config.network_multiplier,
            paths=paths,
            flipped=flips,
            is_reg=regs,
            custom_attributes=attrs,
            epoch=ref.epoch,
            index=ref.index,
        )

    def epoch_refs(self, epoch: int, start: int = 0, shard: tuple[int, int] = (0, 1)) -> list[BatchRef]:
        """This process's batches of `epoch` from its `start`-th on. `shard` = (rank, processes):
        with several processes each takes every n-th batch, so together they cover the epoch."""
        rank, world = shard
        return self.epoch_batches(epoch)[rank::world][start:]

    def iter_epoch(
        self,
        epoch: int,
        start: int = 0,
        *,
        shard: tuple[int, int] = (0, 1),
        first_step: int | None = None,
        accumulation: int = 1,
    ):
        """Batches of `epoch` from batch `start` on (start > 0 when resuming mid-epoch).

        `first_step` is the optimizer step the first batch belongs to (token warm-up counts
        optimizer steps; with `accumulation` batches per step). None: the batch count."""
        for i, ref in enumerate(self.epoch_refs(epoch, start, shard)):
            yield self.load_batch(ref, None if first_step is None else first_step + i // accumulation)

    def loader(
        self,
        epoch: int,
        start: int = 0,
        num_workers: int = 0,
        *,
        shard: tuple[int, int] = (0, 1),
        first_step: int | None = None,
        accumulation: int = 1,
        **kwargs,
    ):
        """`iter_epoch` with images loaded by `num_workers` processes in parallel. The loader's own
        seed comes from a private generator, not torch's global one, so starting a loader (at an
        epoch start, or mid-epoch on resume) draws nothing the training step would draw."""
        if not num_workers:
            return self.iter_epoch(
                epoch, start, shard=shard, first_step=first_step, accumulation=accumulation
            )
        refs = self.epoch_refs(epoch, start, shard)
        steps = None if first_step is None else [first_step + i // accumulation for i in range(len(refs))]
        return iter(
            torch.utils.data.DataLoader(
                _Batches(self, refs, steps),
                batch_size=None,
                shuffle=False,
                num_workers=num_workers,
                collate_fn=_identity,
                generator=torch.Generator().manual_seed(self.seed),
                **kwargs,
            )
        )

    def bucket_histogram(self) -> dict[tuple[int, int], int]:
        """Images x repeats per bucket, over all datasets."""
        hist: Counter = Counter()
        for ds in self.datasets:
            for reso, items in ds.buckets.items():
                hist[reso] += len(items)
        return dict(sorted(hist.items()))


class _Batches(torch.utils.data.Dataset):
    def __init__(self, group: DatasetGroup, refs: list[BatchRef], steps: list[int] | None):
        self.group, self.refs, self.steps = group, refs, steps

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, i: int) -> Batch:
        return self.group.load_batch(self.refs[i], None if self.steps is None else self.steps[i])


def _identity(x):
    return x
