"""Picture endpoints of the dataset page: a new dataset folder, cached thumbnails, and the bucket
preview (which bucket each picture lands in and how much of it is cut away)."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from ..data.bucket_preview import bucket_preview
from ..data.images import IMAGE_EXTENSIONS
from ..data.schema import parse_resolution
from .errors import Conflict, NotFound, WebError
from .routes_jobs import Ctx
from .security import location_of, resolve_location
from .thumbs import SIZES, thumbnail

router = APIRouter(prefix="/api", tags=["datasets and configs"])
_NAME = re.compile(r"[\w][\w\-. ]{0,63}")


class NewDataset(BaseModel):
    name: str = Field(description="The dataset's folder name in datasets/.")
    repeats: int = Field(10, ge=1, le=10_000, description="How often each picture is used per epoch.")
    class_tokens: str = Field(
        description="The folder's name after the repeats (sd-scripts' class tokens): the trigger word, or what the pictures show."
    )


def _plain_name(value: str, what: str) -> str:
    value = value.strip()
    if not _NAME.fullmatch(value) or value.startswith("."):
        raise WebError(
            f"{what} {value!r}: use letters, digits, spaces, '-', '_' or '.' (no '/'; 64 at most)."
        )
    return value


@router.post("/datasets", status_code=201, summary="Create a dataset folder: datasets/NAME/REPEATS_CLASS")
def create_dataset(ctx: Ctx, body: NewDataset) -> dict:
    name = _plain_name(body.name, "dataset name")
    tokens = _plain_name(body.class_tokens, "class tokens")
    folder = ctx.workspace.root / "datasets" / name / f"{body.repeats}_{tokens}"
    if folder.exists():
        raise Conflict(f"{location_of(folder, ctx.workspace.roots())} exists already.")
    folder.mkdir(parents=True)
    roots = ctx.workspace.roots()
    return {"location": location_of(folder.parent, roots), "upload_to": location_of(folder, roots)}


@router.get("/thumb", summary="A picture's thumbnail (JPEG, cached in the workspace)")
def get_thumbnail(
    ctx: Ctx, location: str, size: Annotated[int, Query(description=f"One of {SIZES}.")] = 160
) -> FileResponse:
    picture = resolve_location(location, ctx.workspace.roots())
    if picture.suffix.lower() not in IMAGE_EXTENSIONS or not picture.is_file():
        raise NotFound(f"{location}: no such picture.")
    path, cached = thumbnail(ctx.workspace.root, picture, size)
    return FileResponse(
        path,
        media_type="image/jpeg",
        headers={
            "Cache-Control": "private, no-cache",  # revalidated by its ETag: a changed picture shows at once
            "X-Thumbnail-Cache": "hit" if cached else "miss",
            "X-Content-Type-Options": "nosniff",
        },
    )


@router.get("/dataset/buckets", summary="Bucket preview: each picture's bucket and how much is cut away")
def dataset_buckets(
    ctx: Ctx,
    location: Annotated[str, Query(description="A train folder (with N_name folders) or a dataset TOML.")],
    reg_location: str | None = None,
    resolution: Annotated[str, Query(description="512, or W,H: the training resolution.")] = "512",
    enable_bucket: bool = True,
    min_bucket_reso: Annotated[int, Query(ge=8)] = 256,
    max_bucket_reso: Annotated[int, Query(ge=8)] = 1024,
    bucket_reso_steps: Annotated[int, Query(ge=8)] = 64,
    bucket_no_upscale: bool = False,
    caption_extension: str | None = None,
) -> dict:
    roots = ctx.workspace.roots()
    path = resolve_location(location, roots)
    reg = resolve_location(reg_location, roots) if reg_location else None
    if path.is_file():
        raise WebError("the bucket preview takes a train folder; the dataset check reads dataset TOMLs.")
    if not path.is_dir():
        raise NotFound(f"{location}: no such folder.")
    try:
        size = parse_resolution(resolution)
    except ValueError as e:
        raise WebError(f"resolution {resolution!r} {e}.") from None
    options = {
        "resolution": resolution,
        "enable_bucket": enable_bucket,
        "min_bucket_reso": min_bucket_reso,
        "max_bucket_reso": max_bucket_reso,
        "bucket_reso_steps": bucket_reso_steps,
        "bucket_no_upscale": bucket_no_upscale,
    }
    if caption_extension:
        options["caption_extension"] = caption_extension
    pictures, problems = bucket_preview(path, reg, options, size)
    buckets: dict[str, int] = {}
    for p in pictures:
        key = f"{p.bucket[0]}x{p.bucket[1]}"
        buckets[key] = buckets.get(key, 0) + 1
    return {
        "pictures": [
            {
                "location": location_of(p.path, roots),
                "subset": p.subset,
                "is_reg": p.is_reg,
                "size": list(p.size),
                "bucket": list(p.bucket),
                "resized": list(p.resized),
                "crop": list(p.crop),
                "cut": round(p.cut, 4),
            }
            for p in pictures
        ],
        "buckets": dict(sorted(buckets.items())),
        "errors": [p.message for p in problems.errors],
    }
