"""Server-Sent Events from a run's events.jsonl.

A stream starts after the id in `Last-Event-ID` (a reconnecting browser sends it by itself) or
`?after=N`, so a page opened mid-run gets the whole history and then each new event once, in
order. Every client follows the file on its own (one stat every `POLL` seconds while nothing
changes; the lines are sent as they were written, not parsed and encoded again). The stream
ends once its job is no longer queued or running and every event was sent; a client reconnecting after
that gets 204 No Content, which tells an EventSource to stop reconnecting.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from ..training.events import EventTail

POLL = 0.5
KEEPALIVE = 15.0


def start_after(last_event_id: str | None, after: int | None) -> int:
    """Where a stream starts: the larger of Last-Event-ID and ?after= (bad values count as 0)."""
    try:
        header = int(last_event_id) if last_event_id else 0
    except ValueError:
        header = 0
    return max(header, after or 0, 0)


def format_event(line: bytes | str, event_id: int, kind: str) -> str:
    text = line.decode("utf-8", "replace") if isinstance(line, bytes) else line
    return f"id: {event_id}\nevent: {kind}\ndata: {text}\n\n"


def nothing_more(path: Path | None, after: int, active: Callable[[], bool]) -> bool:
    """True when the job has ended and the file has no event after `after` (answer 204)."""
    if active():
        return False
    if path is None:
        return True
    tail = EventTail(path, after)
    return not tail.poll_raw()


async def stream(
    path: Path, after: int, active: Callable[[], bool], poll: float = POLL, keepalive: float = KEEPALIVE
) -> AsyncIterator[str]:
    """The SSE body: history after `after`, then new events while the job is queued or running
    (`active`); it ends once the job has ended and everything it wrote was sent."""
    tail = EventTail(path, after)
    yield "retry: 2000\n\n"
    quiet_since = time.monotonic()
    while True:
        # the history may be long: read it off the event loop; new lines are a few hundred bytes
        lines = await asyncio.to_thread(tail.poll_raw) if tail.offset == 0 else tail.poll_raw()
        for event, line in lines:
            yield format_event(line, event["id"], event["kind"])
        if lines:
            quiet_since = time.monotonic()
        elif not active():
            if not tail.poll_raw():  # nothing was written between the last read and the check
                return
            continue
        elif time.monotonic() - quiet_since > keepalive:
            yield ": keepalive\n\n"
            quiet_since = time.monotonic()
        await asyncio.sleep(poll)
