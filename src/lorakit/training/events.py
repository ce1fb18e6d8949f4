"""Machine-readable training events: `events.jsonl` in the run's output folder.

One JSON object a line, each with an `id` (1, 2, 3, ... across resumes of the same folder), a
`kind` and a `time` (Unix seconds):

    plan        total_steps, epochs, steps_per_epoch, batch_size, images, start_step, resumed_from
    step        step, total_steps, epoch, loss, lr (one per parameter group), speed (steps/s), eta (s)
    epoch       epoch, step, loss, validation_loss, file
    validation  step, epoch, loss, every ("step" | "epoch")
    sample      step, label, files
    saved       step, epoch, what ("lora" | "state"), path, request (true for "save now")
    warning     message
    collapse    step, message
    end         status ("finished" | "interrupted" | "stopped" | "collapsed" | "failed"), step, ...

Each line is written whole with one `write` call on a file opened for appending, so a reader
(the web UI, `tail -f`) never sees half a line while training runs, and a process killed
mid-run leaves every line before it intact. Readers skip a last line without its newline.
Non-finite numbers (a NaN loss) are written as the strings "nan" / "inf" so every line is valid
JSON for browsers too.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections import deque
from collections.abc import Iterable
from pathlib import Path
from typing import Any

KINDS = ("plan", "step", "epoch", "validation", "sample", "saved", "warning", "collapse", "end")
SPEED_WINDOW = 20  # steps the speed (and so the ETA) is averaged over


def _clean(value: Any) -> Any:
    """JSON-safe: non-finite floats as text, paths and other objects as strings."""
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return str(value)


def last_event_id(path: str | os.PathLike) -> int:
    """The id of the last complete event in `path` (0 when there is none), read from the end."""
    path = Path(path)
    if not path.is_file():
        return 0
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        end = f.tell()
        block = 4096
        while True:
            start = max(0, end - block)
            f.seek(start)
            data = f.read(end - start)
            lines = data.split(b"\n")
            # lines[-1] is the text after the last newline: a partial line, or b""
            for line in reversed(lines[1:-1] if start > 0 else lines[:-1]):
                event = _parse(line)
                if event is not None:
                    return event["id"]
            if start == 0:
                return 0
            block *= 4


def _parse(line: bytes | str) -> dict | None:
    try:
        event = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return None
    if isinstance(event, dict) and isinstance(event.get("id"), int) and isinstance(event.get("kind"), str):
        return event
    return None


class EventLog:
    """The writer. `enabled=False` (other processes of a multi-GPU run, `save_files=False`)
    makes every call a no-op, so the training loop calls it unconditionally."""

    def __init__(self, path: str | os.PathLike, enabled: bool = True):
        self.path = Path(path)
        self.enabled = enabled
        self.last_id = last_event_id(self.path) if enabled else 0
        self.ended = False
        self._fd: int | None = None
        self._times: deque[tuple[float, int]] = deque(maxlen=SPEED_WINDOW + 1)

    def emit(self, kind: str, **fields: Any) -> int | None:
        """Write one event; returns its id."""
        if not self.enabled:
            return None
        if kind not in KINDS:
            raise ValueError(f"unknown event kind {kind!r}; one of {', '.join(KINDS)}")
        if self._fd is None:
            self._open()
        self.last_id += 1
        event = {"id": self.last_id, "kind": kind, "time": round(time.time(), 3), **_clean(fields)}
        os.write(self._fd, (json.dumps(event, ensure_ascii=False) + "\n").encode("utf-8"))
        return self.last_id

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        size = os.fstat(self._fd).st_size
        if size:
            with open(self.path, "rb") as f:
                f.seek(size - 1)
                if f.read(1) != b"\n":  # a line cut short by a crash: end it, readers skip it
                    os.write(self._fd, b"\n")

    # -- the events of a run, with the arithmetic the loop should not carry ---------------

    def plan(self, warnings: Iterable[str] = (), start_step: int = 0, **fields: Any) -> None:
        """The plan, then one warning event per plan warning. Starts the speed clock."""
        self._times.clear()
        self._times.append((time.monotonic(), start_step))
        self.emit("plan", start_step=start_step, warnings=list(warnings), **fields)
        for warning in warnings:
            self.warning(warning)

    def step(self, step: int, total_steps: int, epoch: int, loss: float, lr: list[float]) -> None:
        now = time.monotonic()
        if not self._times:
            self._times.append((now, step - 1))
        self._times.append((now, step))
        (t0, s0), (t1, s1) = self._times[0], self._times[-1]
        speed = (s1 - s0) / (t1 - t0) if t1 > t0 and s1 > s0 else None
        eta = (total_steps - step) / speed if speed else None
        self.emit(
            "step",
            step=step,
            total_steps=total_steps,
            epoch=epoch,
            loss=loss,
            lr=list(lr),
            speed=round(speed, 4) if speed else None,
            eta=round(eta, 1) if eta is not None else None,
        )

    def warning(self, message: str) -> None:
        self.emit("warning", message=message.removeprefix("warning: "))

    def end(self, status: str, **fields: Any) -> None:
        """The last event of a run (once: later calls are ignored); closes the file."""
        if self.ended:
            return
        self.ended = True
        self.emit("end", status=status, **fields)
        self.close()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def read_events(
    path: str | os.PathLike, after: int = 0, limit: int | None = None, kinds: Iterable[str] | None = None
) -> list[dict]:
    """The complete events of `path` with id > `after` (optionally of some kinds), in order."""
    wanted = set(kinds) if kinds else None
    out: list[dict] = []
    tail = EventTail(path, after)
    for event in tail.poll():
        if wanted is None or event["kind"] in wanted:
            out.append(event)
            if limit is not None and len(out) >= limit:
                break
    return out


class EventTail:
    """Follows a growing events file: each `poll()` returns the new complete events with
    id > `after`, remembering where it stopped (a partial last line waits for its newline)."""

    def __init__(self, path: str | os.PathLike, after: int = 0):
        self.path = Path(path)
        self.after = after
        self.offset = 0
        self._partial = b""

    def poll(self) -> list[dict]:
        return [event for event, _ in self.poll_raw()]

    def poll_raw(self) -> list[tuple[dict, bytes]]:
        """The new events with their lines as written (a server can send them on unchanged)."""
        try:
            size = os.stat(self.path).st_size
        except OSError:
            return []
        if size < self.offset:  # the file was replaced: read it again from the start
            self.offset, self._partial = 0, b""
        if size == self.offset:
            return []
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read(size - self.offset)
        self.offset += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        events = []
        for line in lines:
            event = _parse(line)
            if event is not None and event["id"] > self.after:
                self.after = event["id"]
                events.append((event, line))
        return events
