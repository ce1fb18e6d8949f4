"""The pages: one HTML shell and the files of `static/` (ES modules, one CSS file, the Chinese
catalogue), served from the package as they are, with no build step and nothing from elsewhere.

The Content-Security-Policy allows scripts, styles, pictures and requests from this server only
(no inline script, no CDN), so a caption or a file name shown on a page can never run as code.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from .errors import NotFound

STATIC = Path(__file__).with_name("static")
TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".png": "image/png",
    ".ico": "image/x-icon",
}
POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-cache",  # revalidated (ETag) on each load: an edited file shows at once
}

router = APIRouter(include_in_schema=False)


@router.get("/")
def index() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type=TYPES[".html"], headers=HEADERS)


@router.get("/static/{name:path}")
def static_file(name: str) -> FileResponse:
    """Only files of the package's static folder, by a plain relative name."""
    parts = name.split("/")
    path = STATIC.joinpath(*parts).resolve()
    if (
        any(p in ("", ".", "..") or p.startswith(".") for p in parts)
        or STATIC.resolve() not in path.parents
        or path.suffix not in TYPES
        or not path.is_file()
    ):
        raise NotFound(f"/static/{name}: no such file.")
    return FileResponse(path, media_type=TYPES[path.suffix], headers=HEADERS)
