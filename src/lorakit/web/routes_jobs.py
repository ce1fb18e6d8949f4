"""Job endpoints: submit, list, reorder, stop, resume, control, log, events."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, Field

from ..training import control
from ..training.events import read_events
from . import events as sse
from .errors import Conflict, NotFound
from .jobs import LOG_FILE, STATES, Job, check_device, log_tail, saved_state
from .kinds import KINDS, prepare
from .security import location_of, resolve_location

router = APIRouter(prefix="/api", tags=["jobs"])


def context(request: Request):
    return request.app.state.context


Ctx = Annotated[Any, Depends(context)]  # the app's Context: workspace, store, runner, token


class JobIn(BaseModel):
    kind: str = Field(description=f"One of: {', '.join(KINDS)}.")
    config: str | None = Field(None, description="train / lr-find: the training config, as TOML text.")
    config_location: str | None = Field(None, description="Or the location of a TOML file (configs/my.toml).")
    args: dict[str, Any] | None = Field(
        None, description='Other kinds: the command\'s options, e.g. {"lora": "runs/a/a.safetensors"}.'
    )
    name: str | None = Field(None, max_length=200, description="A label; default: the output name.")
    priority: int = Field(0, description="Higher runs first; equal priorities keep the queue order.")
    device: str = Field("default", description="Jobs on one device run one at a time (jobs_per_device).")


class JobChange(BaseModel):
    name: str | None = Field(None, max_length=200)
    priority: int | None = None


class Order(BaseModel):
    order: list[int] = Field(description="Waiting job ids; these go first in this order, the rest follow.")


class ControlIn(BaseModel):
    action: Literal["sample", "save"] = Field(
        description="sample: previews now; save: LoRA file and state now."
    )


def job_view(job: Job, ctx, full: bool = True) -> dict:
    roots = ctx.workspace.roots()
    view = {
        "id": job.id,
        "kind": job.kind,
        "name": job.name,
        "state": job.state,
        "priority": job.priority,
        "position": job.position,
        "device": job.device,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "ended_at": job.ended_at,
        "output_dir": location_of(Path(job.output_dir), roots) if job.output_dir else None,
        "output_name": job.output_name,
        "exit_code": job.exit_code,
        "error": job.error,
        "stop_requested": bool(job.stop_requested),
        "resume": bool(job.resume),
        "attempts": job.attempts,
        "pid": job.pid,
        "events": f"/api/jobs/{job.id}/events" if job.events_path else None,
        "command": ["lorakit", *ctx.runner.command(job)],
    }
    if full:
        view["config"] = job.config
        view["log_tail"] = (job.log_tail or "").splitlines()
    return view


@router.post("/jobs", status_code=201, summary="Submit a job (queued at once)")
def submit(ctx: Ctx, body: JobIn) -> dict:
    config = body.config
    if body.config_location is not None:
        if config is not None:
            raise Conflict("give 'config' or 'config_location', not both.")
        path = resolve_location(body.config_location, ctx.workspace.roots())
        if not path.is_file():
            raise NotFound(f"{body.config_location}: no such config file.")
        config = path.read_text(encoding="utf-8-sig")
    spec = prepare(ctx.workspace, body.kind, config, body.args, body.name)
    job = ctx.store.submit(spec, ctx.workspace, body.priority, check_device(body.device))
    ctx.runner.wake()
    return job_view(job, ctx)


@router.get("/jobs", summary="List jobs: running, then waiting in queue order, then ended (newest first)")
def list_jobs(
    ctx: Ctx,
    state: Annotated[list[str] | None, Query(description=f"Only these: {', '.join(STATES)}.")] = None,
) -> list[dict]:
    if state and set(state) - set(STATES):
        raise NotFound(
            f"unknown state(s) {sorted(set(state) - set(STATES))}; states are {', '.join(STATES)}."
        )
    return [job_view(job, ctx, full=False) for job in ctx.store.jobs(state)]


@router.get("/jobs/{job_id}", summary="One job, with its config and the last lines of its log")
def get_job(ctx: Ctx, job_id: int) -> dict:
    job = ctx.store.get(job_id)
    view = job_view(job, ctx)
    if job.state == "running":
        view["log_tail"] = log_tail(ctx.workspace.job_dir(job_id) / LOG_FILE)
    return view


@router.patch("/jobs/{job_id}", summary="Rename a job or change its priority")
def change_job(ctx: Ctx, job_id: int, body: JobChange) -> dict:
    job = ctx.store.update(job_id, body.name, body.priority)
    ctx.runner.wake()
    return job_view(job, ctx)


@router.delete("/jobs/{job_id}", status_code=204, summary="Forget an ended job (its files stay)")
def delete_job(ctx: Ctx, job_id: int) -> Response:
    ctx.store.delete(job_id)
    return Response(status_code=204)


@router.post("/jobs/{job_id}/stop", summary="Cancel a waiting job, or stop a running one")
def stop_job(ctx: Ctx, job_id: int) -> dict:
    """A running training gets SIGINT: it saves its state and exits (resumable); after the
    workspace's stop_grace_seconds it is killed."""
    job = ctx.store.request_stop(job_id)
    ctx.runner.wake()
    return job_view(job, ctx)


@router.post("/jobs/{job_id}/resume", summary="Queue an interrupted, stopped or failed job again")
def resume_job(ctx: Ctx, job_id: int) -> dict:
    """A training continues from its last saved state (`--resume=auto`); without one it starts again."""
    job = ctx.store.requeue(job_id)
    ctx.runner.wake()
    view = job_view(job, ctx)
    state = saved_state(job)
    view["resumes_from"] = location_of(state, ctx.workspace.roots()) if state else None
    return view


@router.post("/jobs/{job_id}/control", summary="Ask a running training to sample or save now")
def control_job(ctx: Ctx, job_id: int, body: ControlIn) -> dict:
    job = ctx.store.get(job_id)
    if job.kind != "train" or job.state != "running":
        raise Conflict(
            f"job {job_id} is a {job.state} {job.kind} job; only a running training takes requests."
        )
    path = control.send(job.output_dir, body.action)
    return {"job": job_id, "action": body.action, "request": path.name}


@router.put("/queue", summary="Reorder the waiting jobs")
def reorder(ctx: Ctx, body: Order) -> list[dict]:
    jobs = ctx.store.reorder(body.order)
    return [job_view(job, ctx, full=False) for job in jobs]


@router.get("/jobs/{job_id}/log", summary="The last lines of a job's output")
def job_log(ctx: Ctx, job_id: int, lines: Annotated[int, Query(ge=1, le=5000)] = 200) -> dict:
    ctx.store.get(job_id)
    return {"job": job_id, "lines": log_tail(ctx.workspace.job_dir(job_id) / LOG_FILE, lines)}


def _events_path(ctx, job_id: int) -> tuple[Job, Path]:
    job = ctx.store.get(job_id)
    if job.events_path is None:
        raise NotFound(
            f"job {job_id} ({job.kind}) writes no events; read its output at /api/jobs/{job_id}/log."
        )
    return job, job.events_path


@router.get("/jobs/{job_id}/events/history", summary="A training's events so far, as JSON")
def job_event_history(
    ctx: Ctx,
    job_id: int,
    after: Annotated[int, Query(ge=0, description="Only events with a larger id.")] = 0,
    limit: Annotated[int | None, Query(ge=1, le=1_000_000)] = None,
    kind: Annotated[list[str] | None, Query(description="Only these kinds (plan, step, epoch, ...).")] = None,
) -> list[dict]:
    _, path = _events_path(ctx, job_id)
    return read_events(path, after, limit, kind)


@router.get(
    "/jobs/{job_id}/events",
    summary="A training's events as Server-Sent Events (history first, then live)",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/event-stream": {}}},
        204: {"description": "the job ended; nothing more"},
    },
)
async def job_events(
    ctx: Ctx,
    job_id: int,
    after: Annotated[
        int | None, Query(ge=0, description="Start after this id (Last-Event-ID wins when larger).")
    ] = None,
    last_event_id: Annotated[str | None, Header()] = None,
) -> Response:
    """Each event: `id: N`, `event: KIND`, `data: {json}`. Reconnecting with Last-Event-ID
    continues after the last event received, so none is lost or repeated."""
    job, path = _events_path(ctx, job_id)
    start = sse.start_after(last_event_id, after)

    def active() -> bool:
        return ctx.store.get(job_id).state in ("queued", "running")

    if sse.nothing_more(path, start, active):
        return Response(status_code=204)
    return StreamingResponse(
        sse.stream(path, start, active),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
