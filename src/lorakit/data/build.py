"""Building the dataset group from a config: every image checked, buckets chosen, regularization
images looped, and all problems collected before anything trains."""

from __future__ import annotations

from pathlib import Path

from ..errors import DatasetError
from .buckets import BucketSelector
from .config import DataConfig
from .dataset import Dataset, DatasetGroup
from .problems import Problems
from .records import ImageRecord, assign_buckets, loop_regularization, split_validation, subset_records


def _shrink_note(records: list[ImageRecord], reso: tuple[int, int], name: str, problems: Problems) -> None:
    """resolution is a maximum area, not a side: say how many images it shrinks (sd-scripts #543)."""
    shrunk = [r for r in records if r.bucket and r.bucket.resized_size[0] < r.size[0] * 0.75]
    if shrunk:
        r = max(shrunk, key=lambda r: r.size[0] / r.bucket.resized_size[0])
        problems.note(
            None,
            f"{name}: {len(shrunk)} image(s) are scaled below 3/4 of their size to fit resolution "
            f"{reso[0]}x{reso[1]} (an area, not a side), e.g. {r.path.name}: {r.size[0]}x{r.size[1]} -> "
            f"bucket {r.bucket.reso[0]}x{r.bucket.reso[1]}",
        )


def _resolution_problems(ds: Dataset, name: str, problems: Problems) -> None:
    for w, h in ds.buckets:
        if w % 8 or h % 8:
            problems.error(
                None,
                f"{name}: bucket {w}x{h} is not a multiple of 8, which the VAE needs; use a resolution "
                "and bucket_reso_steps that are multiples of 64.",
            )
            break
    if ds.config.enable_bucket and ds.config.bucket_reso_steps % 64:
        problems.note(
            None,
            f"{name}: bucket_reso_steps {ds.config.bucket_reso_steps} is not a multiple of 64 (the usual value)",
        )


def build_datasets(
    config: DataConfig,
    *,
    resolution: tuple[int, int] | int | None = None,
    prior_loss_weight: float = 1.0,
    seed: int = 0,
    max_train_steps: int | None = None,
    verify_images: bool = True,
    split: str = "train",
    strict: bool = True,
) -> DatasetGroup:
    """Find and check every image and caption, assign buckets, loop regularization images.

    `resolution` is used by datasets that do not set one (the model's native size). `split` is
    "train" or "validation" (the part `validation_split` holds out). With `strict`, any error
    raises one `DatasetError` listing them all; otherwise they stay in `group.problems`.
    """
    if split not in ("train", "validation"):
        raise ValueError("split must be 'train' or 'validation'")
    if isinstance(resolution, int):
        resolution = (resolution, resolution)
    problems = Problems(config.problems)
    if not config.datasets and not problems.errors:
        problems.error(None, f"no datasets in {config.source}")
    datasets = []
    for ds_config in config.datasets:
        name = ds_config.name or "dataset"
        reso = ds_config.resolution or resolution
        if reso is None:
            raise DatasetError(f"{name}: no resolution set; add resolution = 512 (or [width, height]).")
        records: list[ImageRecord] = []
        seen_dirs: dict[Path, str] = {}
        for subset in ds_config.subsets:
            folder = subset.image_dir.resolve() if subset.image_dir and subset.image_dir.exists() else None
            if folder is not None and folder in seen_dirs and not subset.is_fine_tuning:
                problems.warning(
                    subset.image_dir, f"this folder is also {seen_dirs[folder]}: its images are used twice"
                )
            elif folder is not None:
                seen_dirs[folder] = subset.name
            records += subset_records(subset, problems, verify_images)
        seed_v = ds_config.validation_seed if ds_config.validation_seed is not None else seed
        records = split_validation(records, ds_config.validation_split, seed_v, split)
        if split == "validation":
            records = [r for r in records if not r.is_reg]
        selector = BucketSelector(
            reso,
            ds_config.min_bucket_reso,
            ds_config.max_bucket_reso,
            ds_config.bucket_reso_steps,
            ds_config.bucket_no_upscale,
            ds_config.enable_bucket,
        )
        assign_buckets(records, selector, problems)
        _shrink_note(records, reso, name, problems)
        if records and all(r.is_reg for r in records):
            problems.error(None, f"{name}: has only regularization images; add training images.")
        loop_regularization(records)
        buckets: dict[tuple[int, int], list[int]] = {}
        for i, r in enumerate(records):
            buckets.setdefault(r.bucket.reso, []).extend([i] * r.num_repeats)
        ds = Dataset(ds_config, reso, records, dict(sorted(buckets.items())))
        _resolution_problems(ds, name, problems)
        datasets.append(ds)
    group = DatasetGroup(datasets, problems, seed, prior_loss_weight, max_train_steps)
    if strict:
        problems.raise_if_errors(config.source or "the dataset")
        if group.steps_per_epoch == 0:
            raise DatasetError(f"{config.source}: no images to train on.")
    return group
