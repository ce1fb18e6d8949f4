"""Requests to a running training: "sample now", "save now" and "stop".

A request is a small file in `OUTPUT_DIR/.lorakit-control/`, written whole (temporary name, then
renamed) by `send` — what `lorakit train --control ACTION --output_dir DIR` and the web UI call.
Training looks into that folder between optimizer steps (one directory read: nothing measurable
next to a step), carries out each request in the order sent and deletes its file, so every
request is done once. Requests left from before a run starts are dropped, so an old "stop" never
ends a new run. Stop saves the training state (as Ctrl+C does) and ends the run; `resume = "auto"`
continues it.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import LorakitError
from ..runs import CONTROL_DIR
from ..utils.files import atomic_path

ACTIONS = {
    "sample": "draw the preview images now (from sample_prompts)",
    "save": "save the LoRA file and the training state now",
    "stop": 'save the training state and stop (continue later with resume = "auto")',
}


class ControlError(LorakitError):
    """A control request that cannot be sent."""


class StopRequested(KeyboardInterrupt):
    """Raised between steps for a "stop" request: the loop's Ctrl+C path saves the state."""


@dataclass
class Request:
    action: str
    sent_at: float
    path: Path


def send(output_dir: str | os.PathLike, action: str) -> Path:
    """Leave a request for the training that writes into `output_dir`; returns its file."""
    if action not in ACTIONS:
        raise ControlError(
            f"unknown control action {action!r}; use one of: "
            + ", ".join(f"{name} ({why})" for name, why in ACTIONS.items())
        )
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        raise ControlError(
            f"{output_dir}: no such output folder. Give the output_dir of the running training "
            "(the folder its LoRA files and run.json go to)."
        )
    folder = output_dir / CONTROL_DIR
    folder.mkdir(exist_ok=True)
    sent = time.time()
    path = folder / f"{time.time_ns():020d}-{os.getpid()}-{action}.json"
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps({"action": action, "sent_at": sent}))
    return path


def pending(output_dir: str | os.PathLike) -> list[Request]:
    """Requests not yet carried out, oldest first (unreadable or unknown ones are skipped)."""
    folder = Path(output_dir) / CONTROL_DIR
    try:
        names = sorted(e.name for e in os.scandir(folder) if e.name.endswith(".json"))
    except OSError:
        return []
    requests = []
    for name in names:
        path = folder / name
        try:
            data = json.loads(path.read_text())
            action, sent_at = data["action"], float(data.get("sent_at", 0))
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if action in ACTIONS:
            requests.append(Request(action, sent_at, path))
    return requests


class ControlPoller:
    """The training side. `enabled=False` (the other processes of a multi-GPU run) polls nothing."""

    def __init__(self, output_dir: str | os.PathLike, enabled: bool = True):
        self.output_dir = Path(output_dir)
        self.enabled = enabled
        self.dropped = self._take() if enabled else []  # stale requests from before this run

    def _take(self) -> list[Request]:
        requests = pending(self.output_dir)
        for request in requests:
            request.path.unlink(missing_ok=True)
        return requests

    def poll(self) -> list[str]:
        """The actions requested since the last poll, in order; each is returned once."""
        if not self.enabled:
            return []
        return [r.action for r in self._take()]

    def serve(self, sample: Callable[[], object], save: Callable[[], object]) -> list[str]:
        """Poll and carry out: `sample()` / `save()` for those requests; StopRequested for stop
        (after the sample and save requests sent before it)."""
        actions = self.poll()
        for action in actions:
            if action == "sample":
                sample()
            elif action == "save":
                save()
            elif action == "stop":
                raise StopRequested
        return actions
