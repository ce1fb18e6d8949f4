"""The FastAPI app of `lorakit ui`: `create_app(workspace, token)`.

Every route sits behind `security.Guard` (token or loopback Host, cross-site check); errors
come back as `{"detail": "what went wrong and what to do"}` with a 4xx status — library errors
(a bad config, a broken dataset) as 422, paths outside the roots as 403 — and an unexpected
failure as a plain 500 message, never a traceback (that goes to the server's output).
"""

from __future__ import annotations

import hmac
import sys
import traceback
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi_offline import FastAPIOffline

from .. import __version__
from ..errors import LorakitError
from . import pages, routes_data, routes_files, routes_form, routes_jobs, routes_pictures, routes_runs
from .errors import status_of
from .jobs import JobStore, Runner
from .security import COOKIE, Guard, form_fields, login_language, login_page, safe_next, session_value
from .workspace import Workspace

DESCRIPTION = """Everything the lorakit pages do, as JSON endpoints for scripts too.

Send `Authorization: Bearer TOKEN` when the server was started with a token (always, when it
listens on anything but 127.0.0.1). Files are named by *location*: a path relative to the
workspace (`runs/mylora/run.json`) or `@NAME/path` in an allowed folder of settings.toml.
Training progress: `GET /api/jobs/{id}/events` (Server-Sent Events, resumable with Last-Event-ID).
"""


@dataclass
class Context:
    workspace: Workspace
    store: JobStore
    runner: Runner
    token: str | None


def create_app(workspace: Workspace, token: str | None = None, run_jobs: bool = True) -> FastAPI:
    """`run_jobs=False`: serve the API without starting jobs (tests of the API alone)."""
    store = JobStore(workspace.db_path)
    runner = Runner(workspace, store)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if run_jobs:
            runner.start()
        yield
        runner.close()

    # /docs with Swagger UI's files served from the package, not a CDN: it works offline
    app = FastAPIOffline(
        title="lorakit",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        redoc_url=None,
    )
    app.state.context = Context(workspace, store, runner, token)
    app.add_middleware(Guard, token=token)
    app.add_exception_handler(LorakitError, _library_error)
    app.add_exception_handler(Exception, _unexpected_error)
    for module in (routes_jobs, routes_data, routes_pictures, routes_form, routes_runs, routes_files, pages):
        app.include_router(module.router)
    _login(app, token)
    return app


async def _library_error(request: Request, error: LorakitError) -> JSONResponse:
    return JSONResponse({"detail": str(error)}, status_code=status_of(error))


async def _unexpected_error(request: Request, error: Exception) -> JSONResponse:
    traceback.print_exception(error, file=sys.stderr)
    return JSONResponse(
        {"detail": f"internal error ({type(error).__name__}); the server's output has the details."},
        status_code=500,
    )


def _login(app: FastAPI, token: str | None) -> None:
    @app.get("/login", response_class=HTMLResponse, include_in_schema=False)
    def login_form(request: Request) -> Response:
        next_url, given = request.query_params.get("next", "/"), request.query_params.get("token")
        if token is None or (given and _valid(given, token)):
            return _logged_in(safe_next(next_url), token)
        language = login_language(request.headers.get("accept-language"))
        return HTMLResponse(login_page(safe_next(next_url), bool(given), language))

    @app.post("/login", response_class=HTMLResponse, include_in_schema=False)
    async def login(request: Request) -> Response:
        form = form_fields(await request.body())
        target = safe_next(form.get("next"))
        if token is None or _valid(form.get("token", ""), token):
            return _logged_in(target, token)
        language = login_language(request.headers.get("accept-language"))
        return HTMLResponse(login_page(target, True, language), status_code=401)

    @app.post("/logout", include_in_schema=False)
    def logout() -> Response:
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response


def _valid(given: str, token: str) -> bool:
    return hmac.compare_digest(given.strip(), token)


def _logged_in(target: str, token: str | None) -> Response:
    response = RedirectResponse(target, status_code=303)
    if token is not None:
        response.set_cookie(COOKIE, session_value(token), httponly=True, samesite="strict", path="/")
    return response
