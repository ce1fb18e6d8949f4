"""`lorakit inspect`: one entry for any file a user may hold, a checkpoint or a LoRA/LyCORIS
network. It lives above `models` and `networks` because it chooses between their reports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..models.checkpoint_file import TensorFile
from ..models.report import checkpoint_report, format_report
from ..networks.reading import is_network_file_keys
from ..networks.report import format_network_report, network_report


def inspect_file(path: str | Path, v_parameterization: bool | None = None) -> dict[str, Any]:
    """The report of a checkpoint, a diffusers folder or a network file (chosen by its keys)."""
    path = Path(path)
    if path.is_file() and is_network_file_keys(list(TensorFile(path))[:200]):
        return network_report(path)
    return checkpoint_report(path, v_parameterization)


def format_inspection(report: dict[str, Any]) -> str:
    if report["kind"] in ("checkpoint", "diffusers folder"):
        return format_report(report)
    return format_network_report(report)
