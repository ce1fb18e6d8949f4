"""Run endpoints: every run of the workspace (from its run.json), one run with its files and
events, notes and stars, the comparison of several runs, the epoch x weight grid of a run, and
"keep this epoch"."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from ..errors import LorakitError
from ..runs import EVENTS_FILE, RUN_FILE, epoch_of, keep_epoch, load_run
from ..training.events import read_events
from .errors import Conflict, NotFound, WebError
from .notes import read_notes, write_note
from .routes_jobs import Ctx
from .security import location_of, resolve_location

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

router = APIRouter(prefix="/api", tags=["runs"])
# The parameters the run list shows (the comparison shows every option).
KEY_PARAMETERS = (
    "network_module",
    "network_dim",
    "network_alpha",
    "learning_rate",
    "unet_lr",
    "text_encoder_lr",
    "optimizer_type",
    "lr_scheduler",
    "train_batch_size",
    "max_train_epochs",
    "resolution",
    "seed",
)
_LABEL = re.compile(r"_(e?\d{6})_(\d{2})\.png$")


def _run_folders(ctx) -> list[Path]:
    found = {p for p in (ctx.workspace.root / "runs").iterdir() if p.is_dir()}
    for job in ctx.store.jobs():
        if job.kind == "train" and job.output_dir:
            found.add(Path(job.output_dir))
    return sorted(p for p in found if (p / RUN_FILE).is_file() or (p / EVENTS_FILE).is_file())


def _read_record(folder: Path) -> dict:
    try:
        data = json.loads((folder / RUN_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _run_folder(ctx, location: str) -> Path:
    folder = resolve_location(location, ctx.workspace.roots())
    if not (folder / RUN_FILE).is_file() and not (folder / EVENTS_FILE).is_file():
        raise NotFound(f"{location} is not a training run (no {RUN_FILE}).")
    return folder


def _job_configs(ctx) -> dict[Path, str]:
    """The TOML each training job was queued with, by its run folder."""
    return {
        Path(job.output_dir).resolve(): job.config
        for job in ctx.store.jobs()
        if job.kind == "train" and job.output_dir and job.config
    }


def _dataset_of(values: dict, roots, job_config: str | None) -> str | None:
    """The dataset a run trained on: train_data_dir or dataset_config, else the folder of the
    [[datasets]] tables its job was queued with (the form writes them when repeats change)."""
    for key in ("train_data_dir", "dataset_config"):
        if values.get(key):
            path = Path(str(values[key]))
            return (location_of(path, roots) if path.is_absolute() else None) or str(values[key])
    try:
        tables = tomllib.loads(job_config or "").get("datasets") or []
    except tomllib.TOMLDecodeError:
        tables = []
    folders = [
        Path(str(s["image_dir"])).parent
        for d in tables
        if isinstance(d, dict)
        for s in d.get("subsets") or []
        if isinstance(s, dict) and s.get("image_dir")
    ]
    if folders:
        return (location_of(folders[0], roots) if folders[0].is_absolute() else None) or folders[0].as_posix()
    return "[[datasets]]" if values else None


def run_summary(folder: Path, roots, notes: dict | None = None, job_config: str | None = None) -> dict:
    record = _read_record(folder)
    epochs = [e for e in record.get("epochs") or [] if isinstance(e, dict)]
    scored = [e for e in epochs if e.get("validation_loss") is not None]
    best = min(scored, key=lambda e: e["validation_loss"]) if scored else None
    values = record.get("config") if isinstance(record.get("config"), dict) else {}
    location = location_of(folder, roots)
    note = (notes or {}).get(location, {})
    base = record.get("base_model")
    return {
        "location": location,
        "name": record.get("output_name") or folder.name,
        "status": record.get("status"),
        "started_at": record.get("started_at"),
        "finished_at": record.get("finished_at"),
        "seconds": record.get("seconds"),
        "steps": record.get("steps") or (record.get("losses") or [[0]])[-1][0],
        "total_steps": (record.get("plan") or {}).get("total_steps"),
        "epochs": len(epochs),
        "base_model": base,
        "base_model_name": Path(base).name if base else None,
        "dataset": _dataset_of(values, roots, job_config),
        "train_images": (record.get("dataset") or {}).get("train_images"),
        "parameters": {k: values.get(k) for k in KEY_PARAMETERS if k in values},
        "final_file": record.get("final_file"),
        "final_loss": epochs[-1].get("loss") if epochs else None,
        "best_epoch": best,
        "best_validation_loss": best["validation_loss"] if best else None,
        "kept": record.get("kept") or [],
        "notes": note.get("notes", ""),
        "stars": note.get("stars", 0),
    }


@router.get("/runs", summary="Every training run of the workspace (from its run.json), with notes and stars")
def list_runs(ctx: Ctx) -> list[dict]:
    roots, notes, configs = ctx.workspace.roots(), read_notes(ctx.workspace.root), _job_configs(ctx)
    return [run_summary(f, roots, notes, configs.get(f.resolve())) for f in _run_folders(ctx)]


def _samples(folder: Path, roots) -> list[dict]:
    """Preview files by label (e000001 = after epoch 1, 000050 = at step 50) and prompt, in the
    order they were drawn (a "sample now" at step 30 comes after epoch 2's)."""
    out = []
    for path in (folder / "sample").glob("*.png"):
        m = _LABEL.search(path.name)
        if m:
            out.append((path.stat().st_mtime, m[1], int(m[2]), location_of(path, roots)))
    first = {}  # a label's moment: when its first picture was written
    for when, label, _, _ in sorted(out):
        first.setdefault(label, when)
    return [
        {"location": location, "label": label, "prompt": prompt}
        for _, label, prompt, location in sorted(out, key=lambda x: (first[x[1]], x[1], x[2]))
    ]


@router.get("/run", summary="One run: run.json, its epochs with their files, previews and LoRA files")
def get_run(ctx: Ctx, location: str) -> dict:
    roots = ctx.workspace.roots()
    folder = _run_folder(ctx, location)
    try:
        record = load_run(folder)
        epochs = [
            {"epoch": e.epoch, "file": location_of(e.file, roots), "validation_loss": e.validation_loss}
            for e in record.epochs
        ]
        best = record.best_epoch()
    except LorakitError:  # still running, nothing saved yet
        epochs, best = [], None
    return {
        **run_summary(folder, roots, read_notes(ctx.workspace.root), _job_configs(ctx).get(folder.resolve())),
        "record": _read_record(folder),
        "saved_epochs": epochs,
        "best_epoch_file": location_of(best.file, roots) if best else None,
        "files": [location_of(p, roots) for p in sorted(folder.glob("*.safetensors"))],
        "samples": [location_of(p, roots) for p in sorted((folder / "sample").glob("*.png"))],
        "previews": _samples(folder, roots),
        "events": f"/api/run/events?location={location_of(folder, roots)}",
    }


@router.get("/run/events", summary="A run's events.jsonl as JSON (also for runs not started from the UI)")
def run_events(
    ctx: Ctx,
    location: str,
    after: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int | None, Query(ge=1, le=1_000_000)] = None,
    kind: Annotated[list[str] | None, Query()] = None,
) -> list[dict]:
    folder = resolve_location(location, ctx.workspace.roots())
    if not (folder / EVENTS_FILE).is_file():
        raise NotFound(f"{location} has no {EVENTS_FILE}.")
    return read_events(folder / EVENTS_FILE, after, limit, kind)


class NoteIn(BaseModel):
    location: str = Field(description="The run folder, e.g. runs/mylora.")
    notes: str | None = Field(None, max_length=20_000, description="Free text; omit to keep.")
    stars: int | None = Field(None, description="0 to 5; omit to keep.")


@router.put("/run/notes", summary="Set a run's notes and stars (kept in the workspace's run-notes.json)")
def set_run_notes(ctx: Ctx, body: NoteIn) -> dict:
    folder = _run_folder(ctx, body.location)
    location = location_of(folder, ctx.workspace.roots())
    return {"location": location, **write_note(ctx.workspace.root, location, body.notes, body.stars)}


@router.get(
    "/runs/compare",
    summary="Two or more runs side by side: parameters (differences marked), losses, last previews",
)
def compare_runs(
    ctx: Ctx, location: Annotated[list[str], Query(description="Two or more run folders.")]
) -> dict:
    if len(location) < 2:
        raise WebError("give two or more runs to compare (location=...&location=...).")
    if len(location) > 8:
        raise WebError("compare at most 8 runs at once.")
    roots, notes, queued = ctx.workspace.roots(), read_notes(ctx.workspace.root), _job_configs(ctx)
    folders = [_run_folder(ctx, loc) for loc in location]
    records = [_read_record(f) for f in folders]
    configs = [r.get("config") if isinstance(r.get("config"), dict) else {} for r in records]
    names = sorted({k for c in configs for k in c})
    parameters = []
    for name in names:
        values = [c.get(name) for c in configs]
        parameters.append({"name": name, "values": values, "differs": any(v != values[0] for v in values)})
    previews = []
    for folder in folders:
        samples = _samples(folder, roots)
        last = samples[-1]["label"] if samples else None
        previews.append([s for s in samples if s["label"] == last])
    return {
        "runs": [run_summary(f, roots, notes, queued.get(f.resolve())) for f in folders],
        "parameters": parameters,
        "differences": [p["name"] for p in parameters if p["differs"]],
        "losses": [r.get("losses") or [] for r in records],
        "validation": [
            [
                [e.get("step"), e.get("validation_loss")]
                for e in r.get("epochs") or []
                if e.get("validation_loss") is not None
            ]
            for r in records
        ],
        "previews": previews,
    }


def _grids(folder: Path) -> list[Path]:
    grid = folder / "grid"
    if (grid / "grid.json").is_file():
        return [grid / "grid.json"]
    return sorted(grid.glob("prompt-*/grid.json"))


@router.get(
    "/run/grid", summary="A run's epoch x weight grids (`lorakit grid --run`): cells, and the epochs' losses"
)
def run_grid(ctx: Ctx, location: str) -> dict:
    """Rows are the run's saved epochs in order, with their validation loss (the lowest marked);
    each cell has its picture and generation parameters. No grid yet: `grids` is empty (queue a
    `grid` job with `{"run": location}`)."""
    roots = ctx.workspace.roots()
    folder = _run_folder(ctx, location)
    try:
        record = load_run(folder)
    except LorakitError as e:
        raise WebError(f"{location}: no grid for this run yet ({e})") from e
    best = record.best_epoch()
    rows = [
        {
            "epoch": e.epoch if e.epoch is not None else epoch_of(e.file),
            "file": location_of(e.file, roots),
            "validation_loss": e.validation_loss,
            "lowest": e == best,
        }
        for e in record.epochs
    ]
    grids = []
    for path in _grids(folder):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        cells = [
            {
                **{k: c.get(k) for k in ("x", "y", "z", "seed", "parameters")},
                "location": location_of(path.parent / c["file"], roots),
            }
            for c in data.get("cells") or []
            if isinstance(c, dict) and isinstance(c.get("file"), str) and ".." not in c["file"]
        ]
        grids.append(
            {
                "location": location_of(path.parent / "grid.png", roots),
                "axes": data.get("axes"),
                "cells": cells,
                "made": path.stat().st_mtime,
            }
        )
    return {
        "location": location_of(folder, roots),
        "name": record.output_name,
        "rows": rows,
        "grids": grids,
        "kept": [
            {**k, "copy": location_of(Path(k["copy"]), roots) or k["copy"]}
            for k in record.data.get("kept") or []
            if isinstance(k, dict) and k.get("copy")
        ],
    }


class KeepIn(BaseModel):
    location: str = Field(description="The run folder.")
    epoch: int = Field(description="The epoch whose LoRA file to keep.")
    target: str = Field(
        description="Where to copy it, e.g. models/mylora-e6.safetensors (never overwritten)."
    )


@router.post(
    "/run/keep", summary="Keep this epoch: copy its LoRA file to a name of your choice, recorded in run.json"
)
def keep_run_epoch(ctx: Ctx, body: KeepIn) -> dict:
    roots = ctx.workspace.roots()
    folder = _run_folder(ctx, body.location)
    target = resolve_location(body.target, roots)
    if target.suffix.lower() != ".safetensors":
        raise WebError(f"{body.target}: the copy's name ends in .safetensors.")
    if target.exists():
        raise Conflict(f"{body.target} exists already; choose another name.")
    if _read_record(folder).get("status") == "running":  # its run.json is still being written
        raise Conflict(f"{body.location} is still training; keep an epoch once it has ended.")
    copy = keep_epoch(folder, body.epoch, target)
    return {"location": location_of(copy, roots), "epoch": body.epoch, "size": copy.stat().st_size}
