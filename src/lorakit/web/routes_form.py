"""Endpoints of the training form: presets, the live plan (steps and warnings), reading an
existing TOML into the form, and writing a preview-prompt file."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from ..evaluation.prompts import load_prompts
from ..utils.files import atomic_path
from .errors import WebError
from .kinds import read_training
from .planning import plan_config
from .presets import presets
from .routes_jobs import Ctx
from .security import location_of, resolve_location

router = APIRouter(prefix="/api", tags=["training form"])


@router.get(
    "/presets", summary="Training presets: kind x base model x memory, each value with its reason (en, zh)"
)
def list_presets() -> list[dict]:
    return presets()


class ConfigText(BaseModel):
    config: str = Field(
        max_length=1_000_000, description="A training TOML (lorakit, sd-scripts or lora-scripts)."
    )


@router.post(
    "/config/plan", summary="The plan of a config: steps per dataset folder, the total, and the warnings"
)
def config_plan(ctx: Ctx, body: ConfigText) -> dict:
    """What `lorakit train` prints before the first step (the step arithmetic and its warnings),
    computed from image headers and the model file's header, so it answers while one types.
    Missing pieces (no model, no dataset yet) come back as problems, not errors."""
    return plan_config(ctx.workspace, body.config)


@router.post(
    "/config/import", summary="Read a TOML into the form: its options, inline datasets and ignored options"
)
def config_import(ctx: Ctx, body: ConfigText) -> dict:
    """Sections are flattened as `lorakit train` reads them, so sd-scripts and lora-scripts
    files load; an unknown option is an error that names the nearest known one."""
    config = read_training(ctx.workspace, body.config)
    return {"values": config.changed(), "datasets": config.dataset, "ignored": config.ignored}


class PromptsIn(BaseModel):
    location: str = Field(description="Where to write it: a .txt file, e.g. configs/mylora-prompts.txt.")
    text: str = Field(
        max_length=200_000, description="One prompt a line, sd-scripts syntax (--n, --d, --s, ...)."
    )


@router.put("/prompts", summary="Write a preview-prompt file (checked first) for sample_prompts")
def save_prompts(ctx: Ctx, body: PromptsIn) -> dict:
    path = resolve_location(body.location, ctx.workspace.roots())
    if path.suffix != ".txt":
        raise WebError(f"{body.location}: a prompt file written here ends in .txt.")
    lines = [line.strip() for line in body.text.splitlines() if line.strip() and not line.startswith("#")]
    load_prompts(lines)  # a line sd-scripts cannot read fails now, not at the first preview
    with atomic_path(path) as tmp:
        tmp.write_text(body.text if body.text.endswith("\n") else body.text + "\n", encoding="utf-8")
    return {"location": location_of(path, ctx.workspace.roots()), "prompts": len(lines)}
