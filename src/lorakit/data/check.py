"""What a dataset will train on, before a single step: the plan and every problem with its file.

`make_plan` is the summary the training loop prints; `check_dataset` is `lorakit dataset check`.
Neither writes anything.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DatasetError
from .build import build_datasets
from .captions import split_tags
from .config import DataConfig, load_config
from .dataset import DatasetGroup
from .discover import config_from_folders
from .problems import ERROR, NOTE, WARNING, Problems


@dataclass
class SubsetPlan:
    name: str
    folder: Path | None
    is_reg: bool
    images: int
    num_repeats: int
    samples: int  # images x repeats per epoch (regularization: after looping)
    captions: Counter  # caption source -> images ("file", "class_tokens", "metadata")
    caption_extension: str
    class_tokens: str | None
    tags: Counter  # tag -> images whose caption has it
    class_token_hits: int  # captions that contain the class tokens


@dataclass
class DatasetPlan:
    name: str
    resolution: tuple[int, int]
    batch_size: int
    enable_bucket: bool
    bucket_no_upscale: bool
    buckets: dict[tuple[int, int], int]  # bucket -> images x repeats
    steps_per_epoch: int
    subsets: list[SubsetPlan]


@dataclass
class Plan:
    datasets: list[DatasetPlan]
    steps_per_epoch: int
    train_images: int
    reg_images: int
    samples: int
    problems: Problems = field(default_factory=Problems)

    def to_dict(self) -> dict[str, Any]:
        return {
            "steps_per_epoch": self.steps_per_epoch,
            "train_images": self.train_images,
            "reg_images": self.reg_images,
            "samples_per_epoch": self.samples,
            "datasets": [
                {
                    "name": d.name,
                    "resolution": list(d.resolution),
                    "batch_size": d.batch_size,
                    "enable_bucket": d.enable_bucket,
                    "steps_per_epoch": d.steps_per_epoch,
                    "buckets": {f"{w}x{h}": n for (w, h), n in d.buckets.items()},
                    "subsets": [
                        {
                            "name": s.name,
                            "folder": str(s.folder) if s.folder else None,
                            "is_reg": s.is_reg,
                            "images": s.images,
                            "num_repeats": s.num_repeats,
                            "samples": s.samples,
                            "captions": dict(s.captions),
                            "class_tokens": s.class_tokens,
                            "top_tags": dict(s.tags.most_common(20)),
                        }
                        for s in d.subsets
                    ],
                }
                for d in self.datasets
            ],
            "problems": [
                {"level": p.level, "path": str(p.path) if p.path else None, "message": p.message}
                for p in self.problems
            ],
        }


def make_plan(group: DatasetGroup) -> Plan:
    datasets = []
    for ds in group.datasets:
        subsets = []
        for subset in ds.config.subsets:
            records = [r for r in ds.records if r.subset is subset]
            tags: Counter = Counter()
            hits = 0
            token = (subset.class_tokens or "").lower()
            for r in records:
                tags.update(
                    {t for line in r.caption.split("\n") for t in split_tags(line, subset.caption_separator)}
                )
                if token and token in r.caption.lower():
                    hits += 1
            subsets.append(
                SubsetPlan(
                    name=subset.name,
                    folder=subset.image_dir or subset.metadata_file,
                    is_reg=subset.is_reg,
                    images=len(records),
                    num_repeats=subset.num_repeats,
                    samples=sum(r.num_repeats for r in records),
                    captions=Counter(r.caption_source for r in records),
                    caption_extension=subset.caption_extension,
                    class_tokens=subset.class_tokens,
                    tags=tags,
                    class_token_hits=hits,
                )
            )
        c = ds.config
        datasets.append(
            DatasetPlan(
                name=c.name,
                resolution=ds.resolution,
                batch_size=ds.batch_size,
                enable_bucket=c.enable_bucket,
                bucket_no_upscale=c.bucket_no_upscale,
                buckets={reso: len(items) for reso, items in ds.buckets.items()},
                steps_per_epoch=ds.steps_per_epoch,
                subsets=subsets,
            )
        )
    return Plan(
        datasets=datasets,
        steps_per_epoch=group.steps_per_epoch,
        train_images=group.num_train_images,
        reg_images=group.num_reg_images,
        samples=sum(sum(d.buckets.values()) for d in datasets),
        problems=group.problems,
    )


def _n(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _caption_summary(s: SubsetPlan) -> str:
    parts = []
    if s.captions.get("file"):
        parts.append(f"{s.captions['file']} from {s.caption_extension} files")
    if s.captions.get("metadata"):
        parts.append(f"{s.captions['metadata']} from the metadata file")
    if s.captions.get("class_tokens"):
        parts.append(
            f"{s.captions['class_tokens']} without a caption file (class tokens '{s.class_tokens}' used)"
        )
    return "; ".join(parts) or "none"


def format_plan(plan: Plan, top_tags: int = 8) -> str:
    """The plan as plain text: per dataset its subsets, buckets and steps per epoch."""
    out = []
    for d in plan.datasets:
        w, h = d.resolution
        if d.enable_bucket:
            mode = (
                "buckets made from each image size (no upscale)"
                if d.bucket_no_upscale
                else "aspect-ratio buckets"
            )
        else:
            mode = f"every image scaled and centre-cropped to {w}x{h}"
        out.append(f"{d.name}: resolution {w}x{h}, batch size {d.batch_size}, {mode}")
        for s in d.subsets:
            kind = "reg  " if s.is_reg else "train"
            if s.is_reg and s.samples != s.images * s.num_repeats:
                uses = f"{_n(s.images, 'image')}, looped to {s.samples} per epoch"
            else:
                uses = f"{_n(s.images, 'image')} x {_n(s.num_repeats, 'repeat')} = {s.samples} per epoch"
            out.append(f"  [{kind}] {s.name}: {uses}")
            out.append(f"          captions: {_caption_summary(s)}")
            if s.tags:
                common = ", ".join(f"{t} {n}/{s.images}" for t, n in s.tags.most_common(top_tags))
                out.append(f"          tags: {len(s.tags)} different; most used: {common}")
            if s.class_tokens and s.captions.get("file"):
                out.append(
                    f"          class tokens '{s.class_tokens}' appear in {s.class_token_hits}/{s.images} captions"
                )
        total = sum(d.buckets.values())
        out.append("  buckets (width x height: images x repeats):")
        biggest = max(d.buckets.values(), default=1)
        for (bw, bh), n in d.buckets.items():
            bar = "#" * max(1, round(30 * n / biggest))
            out.append(f"    {bw:>5}x{bh:<5} {n:>6}  {bar}")
        out.append(
            f"  steps per epoch: {d.steps_per_epoch} ({total} images x repeats / batch size {d.batch_size}, "
            "rounded up per bucket)"
        )
    out.append(
        f"Total: {plan.train_images} training images, {plan.reg_images} regularization images, "
        f"{plan.steps_per_epoch} steps per epoch."
    )
    return "\n".join(out)


def format_problems(problems: Problems, verbose: bool = False) -> str:
    errors, warnings, notes = ([p for p in problems if p.level == lv] for lv in (ERROR, WARNING, NOTE))
    out = []
    if errors or warnings:
        out.append(f"Problems ({len(errors)} errors, {len(warnings)} warnings):")
        out += [f"  {p}" for p in errors + warnings]
    if notes:
        if verbose:
            out.append(f"Notes ({len(notes)}):")
            out += [f"  {p}" for p in notes]
        else:
            out.append(f"{len(notes)} notes (conversions and skipped files); --verbose lists them.")
    if errors:
        out.append(f"Result: {len(errors)} error(s) must be fixed before training.")
    else:
        out.append("Result: ready to train." + (" Read the warnings first." if warnings else ""))
    return "\n".join(out)


def load_any(
    path: str | Path, reg_data_dir: str | Path | None = None, options: dict | None = None
) -> DataConfig:
    """A dataset config file (.toml/.json) or a kohya train folder, with command-line options."""
    path = Path(path)
    if path.is_file() or path.suffix.lower() in (".toml", ".json"):
        if reg_data_dir:
            raise DatasetError(
                "--reg_data_dir goes with a train folder; a dataset config lists its own reg folders."
            )
        return load_config(path, defaults=options)
    return config_from_folders(path, reg_data_dir, options=options)


def check_dataset(
    path: str | Path,
    reg_data_dir: str | Path | None = None,
    options: dict | None = None,
    resolution: tuple[int, int] | None = None,
) -> Plan:
    """Read everything, decode every image, and return the plan with all problems.
    A config that cannot be read at all gives a plan with no datasets and its errors."""
    try:
        config = load_any(path, reg_data_dir, options)
    except DatasetError as e:
        problems = Problems()
        problems.error(None, str(e))
        return Plan([], 0, 0, 0, 0, problems)
    if resolution is None and any(ds.resolution is None for ds in config.datasets):
        resolution = (512, 512)
        config.problems.note(
            None, "resolution is not set; this check assumes 512x512 (give --resolution 1024 for SDXL)"
        )
    try:
        group = build_datasets(config, resolution=resolution, strict=False)
    except DatasetError as e:
        problems = Problems(config.problems)
        problems.error(None, str(e))
        return Plan([], 0, 0, 0, 0, problems)
    return make_plan(group)
