"""The user's notes and stars on runs, kept in the workspace (`run-notes.json`), not in the run
folders: a run folder stays what the training wrote, and notes survive deleting a run's files.
Keyed by the run's location (`runs/mylora`)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from ..utils.files import atomic_path
from .errors import WebError

NOTES_FILE = "run-notes.json"
MAX_STARS = 5
_lock = threading.Lock()


def read_notes(workspace_root: Path) -> dict[str, dict]:
    try:
        data = json.loads((workspace_root / NOTES_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in data.items() if isinstance(v, dict)} if isinstance(data, dict) else {}


def write_note(workspace_root: Path, location: str, notes: str | None, stars: int | None) -> dict:
    """Change a run's notes and/or stars (None leaves that part as it is); returns the entry."""
    if stars is not None and not 0 <= stars <= MAX_STARS:
        raise WebError(f"stars must be 0 to {MAX_STARS}, got {stars}.")
    with _lock:
        data = read_notes(workspace_root)
        entry = data.get(location, {"notes": "", "stars": 0})
        if notes is not None:
            entry["notes"] = notes
        if stars is not None:
            entry["stars"] = stars
        data[location] = entry
        with atomic_path(workspace_root / NOTES_FILE) as tmp:
            tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")
    return entry
