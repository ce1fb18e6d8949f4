"""Workspace endpoints: server info, the option table, folders and files, models."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse

from .. import __version__
from ..errors import LorakitError
from ..models.checkpoint_file import TensorFile
from ..models.report import checkpoint_report
from ..networks.reading import is_network_file_keys
from .errors import NotFound
from .form import form_options
from .jobs import STATES
from .kinds import ARGS, KINDS
from .routes_jobs import Ctx
from .security import location_of, resolve_location
from .workspace import FOLDERS

router = APIRouter(prefix="/api", tags=["workspace"])
MODEL_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")
INLINE = {  # served for display; everything else is a download (no HTML or SVG runs in this origin)
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
    ".bmp": "image/bmp",
    ".gif": "image/gif",
}
TEXT = (".txt", ".caption", ".toml", ".json", ".jsonl", ".log", ".csv", ".md", ".yaml", ".yml")


def _path(ctx, location: str) -> Path:
    return ctx.workspace.root if location in ("", ".") else resolve_location(location, ctx.workspace.roots())


@router.get("/info", summary="Version, workspace, job kinds and states")
def info(ctx: Ctx) -> dict:
    ws = ctx.workspace
    return {
        "version": __version__,
        "workspace": str(ws.root),
        "folders": {name: name + "/" for name in FOLDERS},
        "token_required": ctx.token is not None,
        "job_kinds": {kind: sorted(ARGS.get(kind, {})) for kind in KINDS},
        "job_states": list(STATES),
        "jobs_per_device": ws.settings.jobs_per_device,
    }


@router.get("/settings", summary="The workspace settings (edit settings.toml and restart to change them)")
def settings(ctx: Ctx) -> dict:
    s = ctx.workspace.settings
    return {
        "jobs_per_device": s.jobs_per_device,
        "stop_grace_seconds": s.stop_grace_seconds,
        "max_upload_mb": s.max_upload_mb,
        "allow": {f"@{name}": str(path) for name, path in s.allow.items()},
        "file": str(ctx.workspace.root / "settings.toml"),
    }


@router.get(
    "/options", summary="Every training option: name, default, type, section, help (English and Chinese)"
)
def options() -> dict:
    """Also what the training form is made of: which options come first (`common`, `rank`) and
    the values some choose from (`choices`: one of these; `suggestions`: usually one of these)."""
    return form_options()


@router.get("/roots", summary="The folders requests may name: the workspace and the allowed folders")
def roots(ctx: Ctx) -> list[dict]:
    return [{"prefix": prefix, "path": str(path)} for prefix, path in ctx.workspace.roots().items()]


@router.get("/browse", summary="The entries of a folder")
def browse(
    ctx: Ctx, location: Annotated[str, Query(description="A folder location; empty: the workspace.")] = ""
) -> dict:
    folder = _path(ctx, location)
    if not folder.is_dir():
        raise NotFound(f"{location}: no such folder.")
    roots = ctx.workspace.roots()
    entries = []
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        path = Path(entry.path)
        shown = location_of(path.resolve(), roots)
        if shown is None:  # a link that points outside: not listed
            continue
        stat = path.stat()
        entries.append(
            {
                "name": entry.name,
                "location": shown,
                "folder": path.is_dir(),
                "size": None if path.is_dir() else stat.st_size,
                "modified": stat.st_mtime,
            }
        )
    return {"location": location_of(folder, roots), "entries": entries}


@router.get(
    "/files/{location:path}", summary="A file: pictures shown, text as text, anything else downloaded"
)
def get_file(ctx: Ctx, location: str) -> FileResponse:
    path = resolve_location(location, ctx.workspace.roots())
    if not path.is_file():
        raise NotFound(
            f"{location}: no such file" + (" (it is a folder: use /api/browse)." if path.is_dir() else ".")
        )
    suffix = path.suffix.lower()
    headers = {"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "default-src 'none'"}
    if suffix in INLINE:
        return FileResponse(path, media_type=INLINE[suffix], headers=headers)
    if suffix in TEXT:
        return FileResponse(path, media_type="text/plain; charset=utf-8", headers=headers)
    return FileResponse(path, media_type="application/octet-stream", filename=path.name, headers=headers)


# -- models -------------------------------------------------------------------------------------


def _model_kind(path: Path) -> str:
    if path.is_dir():
        return "diffusers folder"
    if path.suffix.lower() != ".safetensors":
        return "pickle file (read through the safe unpickler)"
    try:
        return "lora" if is_network_file_keys(list(TensorFile(path))[:200]) else "checkpoint"
    except LorakitError:
        return "unreadable"


def _walk_models(root: Path, depth: int):
    if depth < 0 or not root.is_dir():
        return
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            if (entry / "model_index.json").is_file():
                yield entry
            elif not entry.name.endswith("-state"):
                yield from _walk_models(entry, depth - 1)
        elif entry.suffix.lower() in MODEL_SUFFIXES:
            yield entry


@router.get("/models", summary="Model and LoRA files in models/, runs/ and the allowed folders")
def list_models(ctx: Ctx) -> list[dict]:
    roots = ctx.workspace.roots()
    places = [
        ctx.workspace.root / "models",
        ctx.workspace.root / "runs",
        *ctx.workspace.settings.allow.values(),
    ]
    out, seen = [], set()
    for place in places:
        for path in _walk_models(place, 4):
            real = path.resolve()
            shown = location_of(real, roots)
            if shown is None or real in seen:
                continue
            seen.add(real)
            size = path.stat().st_size if path.is_file() else None
            out.append({"name": path.name, "location": shown, "kind": _model_kind(path), "size": size})
    return out


@router.get("/model/report", summary="`lorakit inspect`: what a model or LoRA file is (hashes take a while)")
def model_report(ctx: Ctx, location: str) -> dict:
    path = resolve_location(location, ctx.workspace.roots())
    if not path.exists():
        raise NotFound(f"{location}: no such file.")
    report = checkpoint_report(path)
    report["location"] = location_of(path, ctx.workspace.roots())
    return report
