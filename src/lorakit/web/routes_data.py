"""Dataset and config endpoints: list pictures with captions, the check report, tag edits
(through `lorakit.data.tags`, with its backups, as `lorakit tags`), uploads, configs."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, Query, UploadFile
from pydantic import BaseModel, Field

from ..data import tags as T
from ..data.captions import CaptionError, read_text, split_tags
from ..data.check import check_dataset, format_plan, format_problems
from ..data.discover import parse_folder_name
from ..data.images import IMAGE_EXTENSIONS
from ..data.tagging import DEFAULT_CAPTIONER, DEFAULT_TAGGER, KNOWN_MODELS
from ..errors import DatasetError
from ..training.config import read_toml, to_toml
from ..utils.files import atomic_path
from .errors import Conflict, NotFound, WebError
from .kinds import check_dataset_paths, prepare, read_training
from .routes_jobs import Ctx
from .security import location_of, resolve_location

router = APIRouter(prefix="/api", tags=["datasets and configs"])
CAPTION_EXTENSIONS = (".txt", ".caption")
_SAFE_NAME = re.compile(r"[^\w\-. ()\[\]]+")


def _folder(ctx, location: str) -> Path:
    path = resolve_location(location, ctx.workspace.roots())
    if not path.is_dir():
        raise NotFound(f"{location}: no such folder.")
    return path


def _caption_ext(folder: Path, given: str | None) -> str | None:
    try:
        return T.caption_extension(folder, given, recursive=True)
    except DatasetError:
        return None


def _tags_of(path: Path, separator: str) -> tuple[str | None, list[str]]:
    try:
        text = read_text(path)
    except (CaptionError, OSError):
        return None, []
    return text, [t for line in text.splitlines() for t in split_tags(line, separator)]


def _has_subset_folders(folder: Path) -> bool:
    return folder.is_dir() and any(
        p.is_dir() and not p.name.startswith(".") and parse_folder_name(p.name) for p in folder.iterdir()
    )


def dataset_layout(folder: Path, roots) -> dict:
    """Where a dataset folder's pictures are for training: the folder itself when it holds
    N_name folders (train_data_dir), else its train/ folder (and reg/ for regularization)."""
    if _has_subset_folders(folder):
        return {"train": location_of(folder, roots), "reg": None}
    train, reg = folder / "train", folder / "reg"
    return {
        "train": location_of(train, roots) if _has_subset_folders(train) else None,
        "reg": location_of(reg, roots) if _has_subset_folders(reg) else None,
    }


@router.get("/datasets", summary="The dataset folders of the workspace (datasets/)")
def list_datasets(ctx: Ctx) -> list[dict]:
    roots = ctx.workspace.roots()
    out = []
    for folder in sorted(
        p
        for p in (ctx.workspace.root / "datasets").iterdir()
        if p.is_dir() and not p.name.startswith(".") and location_of(p.resolve(), roots) is not None
    ):
        images = sum(
            1
            for p in folder.rglob("*")
            if p.suffix.lower() in IMAGE_EXTENSIONS and ".lorakit-backup" not in p.parts
        )
        configs = [location_of(p, roots) for p in sorted(folder.glob("*.toml"))]
        out.append(
            {
                "name": folder.name,
                "location": location_of(folder, roots),
                "images": images,
                "configs": configs,
                **dataset_layout(folder, roots),
            }
        )
    return out


@router.get("/dataset", summary="A dataset folder's pictures with their captions and tags")
def dataset_listing(
    ctx: Ctx,
    location: str,
    caption_extension: Annotated[
        str | None, Query(description="Default: .txt or .caption, whichever is there.")
    ] = None,
    separator: str = ",",
) -> dict:
    folder = _folder(ctx, location)
    roots = ctx.workspace.roots()
    ext = _caption_ext(folder, caption_extension)
    images = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if path.suffix.lower() not in IMAGE_EXTENSIONS or any(p.startswith(".") for p in rel.parts):
            continue
        if location_of(path.resolve(), roots) is None:  # a link to a file outside: not shown
            continue
        caption = path.with_suffix(ext) if ext else None
        text, tags = _tags_of(caption, separator) if caption and caption.is_file() else (None, [])
        images.append(
            {
                "location": location_of(path, roots),
                "subset": rel.parent.as_posix(),
                "caption_location": location_of(caption, roots) if text is not None else None,
                "caption": text,
                "tags": tags,
            }
        )
    return {
        "location": location_of(folder, roots),
        "caption_extension": ext,
        "images": images,
        **dataset_layout(folder, roots),
    }


@router.get("/dataset/check", summary="`lorakit dataset check`: what training will see, and every problem")
def dataset_check(
    ctx: Ctx,
    location: Annotated[str, Query(description="A train folder (with N_name folders) or a dataset TOML.")],
    reg_location: str | None = None,
    resolution: str | None = None,
    train_batch_size: Annotated[int | None, Query(ge=1)] = None,
    caption_extension: str | None = None,
    enable_bucket: bool | None = None,
    bucket_reso_steps: Annotated[int | None, Query(ge=8)] = None,
    min_bucket_reso: Annotated[int | None, Query(ge=8)] = None,
    max_bucket_reso: Annotated[int | None, Query(ge=8)] = None,
) -> dict:
    roots = ctx.workspace.roots()
    path = resolve_location(location, roots)
    reg = resolve_location(reg_location, roots) if reg_location else None
    if path.is_file():  # a dataset TOML: the folders it names must be inside the roots too
        check_dataset_paths(read_toml(path), ctx.workspace, path.parent, location)
    given = {
        "resolution": resolution,
        "batch_size": train_batch_size,
        "caption_extension": caption_extension,
        "enable_bucket": enable_bucket,
        "bucket_reso_steps": bucket_reso_steps,
        "min_bucket_reso": min_bucket_reso,
        "max_bucket_reso": max_bucket_reso,
    }
    plan = check_dataset(path, reg, {k: v for k, v in given.items() if v is not None})
    report = plan.to_dict()
    for problem in report["problems"]:
        if problem["path"]:
            problem["location"] = location_of(Path(problem["path"]), roots)
    report["text"] = (format_plan(plan) + "\n\n" if plan.datasets else "") + format_problems(
        plan.problems, True
    )
    report["ready"] = not plan.problems.errors
    return report


@router.get("/dataset/tags", summary="How many captions use each tag (`lorakit tags stats`)")
def dataset_tag_stats(
    ctx: Ctx, location: str, caption_extension: str | None = None, separator: str = ","
) -> dict:
    counts, files, unreadable = T.tag_stats(_folder(ctx, location), caption_extension, True, separator)
    return {
        "captions": files,
        "tags": [{"tag": t, "count": n} for t, n in counts.most_common()],
        "unreadable": [
            {"location": location_of(p, ctx.workspace.roots()), "reason": why} for p, why in unreadable
        ],
    }


class TagEdit(BaseModel):
    location: str = Field(description="The dataset folder (all its subfolders are included).")
    action: Literal["add", "remove", "replace", "dedup"]
    tags: list[str] = Field(default_factory=list, description="add / remove: the tags.")
    old: str | None = Field(None, description="replace: the tag to replace.")
    new: str | None = Field(None, description="replace: the tag to put in its place.")
    at_end: bool = Field(False, description="add: at the end instead of the front.")
    files: list[str] | None = Field(None, description="Only these pictures or captions (locations).")
    caption_extension: str | None = None
    separator: str = ","
    dry_run: bool = Field(False, description="Only show the changes.")


@router.post("/dataset/tags", summary="Add, remove, replace or dedup tags, with a backup (`lorakit tags`)")
def edit_tags(ctx: Ctx, body: TagEdit) -> dict:
    folder = _folder(ctx, body.location)
    roots = ctx.workspace.roots()
    if body.action in ("add", "remove") and not body.tags:
        raise WebError(f"{body.action}: give the tags in 'tags'.")
    if body.action == "replace" and not (body.old and body.new is not None):
        raise WebError("replace: give 'old' and 'new'.")
    op = {
        "add": lambda: T.op_add(body.tags, at_end=body.at_end),
        "remove": lambda: T.op_remove(body.tags),
        "replace": lambda: T.op_replace(body.old, body.new),
        "dedup": T.op_dedup,
    }[body.action]()
    edits, unreadable = T.plan_edits(folder, op, body.caption_extension, True, body.separator)
    outside = [e for e in edits if location_of(e.path.resolve(), roots) is None]
    edits = [e for e in edits if e not in outside]  # links to captions outside: never read back or written
    unreadable += [(e.path, "a link to a file outside the workspace") for e in outside]
    if body.files is not None:
        chosen = {resolve_location(f, roots).with_suffix("") for f in body.files}
        edits = [e for e in edits if e.path.with_suffix("") in chosen]
    backup = None if body.dry_run else T.apply_edits(folder, edits)
    return {
        "changed": [
            {"location": location_of(e.path, roots), "before": e.before, "after": e.after} for e in edits
        ],
        "unreadable": [{"location": location_of(p, roots), "reason": why} for p, why in unreadable],
        "backup": location_of(backup, roots) if backup else None,
        "dry_run": body.dry_run,
    }


class CaptionIn(BaseModel):
    location: str = Field(description="The picture (or its caption file).")
    text: str = Field(max_length=100_000)
    caption_extension: str | None = Field(None, description="Default: the folder's (.txt when it has none).")


@router.put("/dataset/caption", summary="Write one picture's caption (the old one is backed up)")
def write_caption(ctx: Ctx, body: CaptionIn) -> dict:
    roots = ctx.workspace.roots()
    path = resolve_location(body.location, roots)
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        if not path.is_file():
            raise NotFound(f"{body.location}: no such picture.")
        ext = body.caption_extension or _caption_ext(path.parent, None) or ".txt"
        path = path.with_suffix(ext if ext.startswith(".") else "." + ext)
    if path.suffix not in CAPTION_EXTENSIONS:
        raise WebError(f"{body.location}: not a picture or a caption file ({', '.join(CAPTION_EXTENSIONS)}).")
    text = body.text if body.text.endswith("\n") else body.text + "\n"
    before = read_text(path) if path.is_file() else None
    backup = T.apply_edits(path.parent, [T.CaptionEdit(path, before, text)]) if before != text else None
    return {"location": location_of(path, roots), "backup": location_of(backup, roots) if backup else None}


class RestoreIn(BaseModel):
    location: str
    backup: str | None = Field(None, description="Its name (tags-...); default: the newest.")


@router.post("/dataset/tags/restore", summary="Undo a tag change: put a backup back (`lorakit tags restore`)")
def restore_tags(ctx: Ctx, body: RestoreIn) -> dict:
    roots = ctx.workspace.roots()
    backup, restored, removed = T.restore_backup(_folder(ctx, body.location), body.backup)
    return {
        "backup": backup.name,
        "restored": [location_of(p, roots) for p in restored],
        "removed": [location_of(p, roots) for p in removed],
    }


@router.get(
    "/dataset/models", summary="The taggers and captioners lorakit knows (`lorakit tag --list-models`)"
)
def tagging_models() -> list[dict]:
    """For the auto-tag and caption forms. A model is downloaded by the job that first needs it
    (offline, the job says which files to fetch and where to put them)."""
    return [
        {
            "name": m.name,
            "repo_id": m.repo_id,
            "kind": "tagger" if m.kind == "wd14" else "captioner",
            "family": m.kind,
            "size": m.size,
            "licence": m.licence,
            "default": m.name in (DEFAULT_TAGGER, DEFAULT_CAPTIONER),
        }
        for m in KNOWN_MODELS
    ]


@router.get("/dataset/backups", summary="The tag backups of a folder, oldest first")
def list_tag_backups(ctx: Ctx, location: str) -> list[str]:
    return [b.name for b in T.list_backups(_folder(ctx, location))]


@router.post("/dataset/upload", summary="Add pictures (and captions) to a dataset folder")
async def upload(
    ctx: Ctx,
    location: Annotated[
        str, Form(description="The folder, e.g. datasets/cat/10_cat (created when missing).")
    ],
    files: Annotated[list[UploadFile], File(description="Pictures and .txt/.caption files.")],
    replace: Annotated[bool, Form()] = False,
) -> dict:
    roots = ctx.workspace.roots()
    folder = resolve_location(location, roots)
    limit = int(ctx.workspace.settings.max_upload_mb * 1024 * 1024)
    saved = []
    for upload_file in files:
        name = _SAFE_NAME.sub("_", Path(upload_file.filename or "").name).strip(" .")
        if Path(name).suffix.lower() not in (*IMAGE_EXTENSIONS, *CAPTION_EXTENSIONS):
            raise WebError(
                f"{upload_file.filename!r}: only pictures ({', '.join(IMAGE_EXTENSIONS)}) and captions."
            )
        target = folder / name
        if target.exists() and not replace:
            raise Conflict(f"{location_of(target, roots)} exists; send replace=true to overwrite it.")
        data = await upload_file.read(limit + 1)
        if len(data) > limit:
            raise WebError(
                f"{name} is larger than max_upload_mb ({ctx.workspace.settings.max_upload_mb:g} MB)."
            )
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(target) as tmp:
            tmp.write_bytes(data)
        saved.append(location_of(target, roots))
    return {"saved": saved}


# -- configs ------------------------------------------------------------------------------------


@router.get("/configs", summary="The training configs of the workspace (configs/)")
def list_configs(ctx: Ctx) -> list[dict]:
    roots = ctx.workspace.roots()
    return [
        {
            "name": p.stem,
            "location": location_of(p, roots),
            "size": p.stat().st_size,
            "modified": p.stat().st_mtime,
        }
        for p in sorted((ctx.workspace.root / "configs").rglob("*.toml"))
    ]


class ConfigIn(BaseModel):
    location: str = Field(description="Where to write it, e.g. configs/mylora.toml.")
    text: str = Field(max_length=1_000_000)


@router.put("/config", summary="Save a training config (checked first)")
def save_config(ctx: Ctx, body: ConfigIn) -> dict:
    path = resolve_location(body.location, ctx.workspace.roots())
    if path.suffix != ".toml":
        raise WebError(f"{body.location}: a config file's name ends in .toml.")
    read_training(ctx.workspace, body.text)
    with atomic_path(path) as tmp:
        tmp.write_text(body.text, encoding="utf-8")
    return {"location": location_of(path, ctx.workspace.roots())}


class ConfigCheck(BaseModel):
    config: str = Field(max_length=1_000_000, description="A training TOML.")
    kind: Literal["train", "lr-find"] = "train"


@router.post("/config/check", summary="Check a training config as a submission would, without queueing it")
def check_config(ctx: Ctx, body: ConfigCheck) -> dict:
    """Options and paths are checked as for `POST /api/jobs`; the answer has the resolved
    config (`lorakit train --print-config`), the options lorakit ignores, and the run folder."""
    spec = prepare(ctx.workspace, body.kind, body.config, None, None)
    config = read_training(ctx.workspace, spec.config)
    return {
        "resolved": to_toml(config),
        "changed": config.changed(),
        "ignored": config.ignored,
        "output_dir": location_of(spec.output_dir, ctx.workspace.roots()),
        "output_name": spec.output_name,
    }
