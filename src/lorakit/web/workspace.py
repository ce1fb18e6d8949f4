"""The workspace: one folder that holds everything the UI works on.

    WORKSPACE/
      settings.toml   allowed folders outside the workspace, jobs per device, stop grace time
      lorakit.db      the job queue (SQLite, WAL mode)
      datasets/       training pictures and captions (kohya folders like 10_name, or dataset TOMLs)
      configs/        training configs (TOML)
      runs/NAME/      training outputs: LoRA files, run.json, events.jsonl, samples, states
      models/         base checkpoints, VAEs and other LoRA files
      jobs/ID/        per job: config.toml, log.txt, the process ids and the exit status

Requests name files by *location*: a path relative to the workspace (`datasets/cat/1.png`) or
`@NAME/path` inside the allowed folder NAME of settings.toml. Settings are read from the file
only (no endpoint changes them), so a request can never widen what the server may touch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError
from ..training.config import read_toml

SETTINGS_FILE = "settings.toml"
DB_FILE = "lorakit.db"
FOLDERS = ("datasets", "configs", "runs", "models", "jobs")
ALIAS = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{1,31}")

DEFAULT_SETTINGS = """\
# lorakit ui workspace settings; restart `lorakit ui` after changing them.

# How many jobs run at the same time on one device (a GPU, or the CPU). Others wait in the queue.
jobs_per_device = 1

# After "stop", seconds a training may take to save its state before it is killed.
stop_grace_seconds = 60

# Largest picture upload, in megabytes.
max_upload_mb = 50

# Folders outside this workspace that the UI may read and write, as NAME = "folder".
# Requests reach them as @NAME/path (for example @models/sd15.safetensors), and configs may use
# their absolute paths. Nothing else outside the workspace is reachable.
[allow]
# models = "/data/stable-diffusion/models"
"""


@dataclass
class Settings:
    jobs_per_device: int = 1
    stop_grace_seconds: float = 60.0
    max_upload_mb: float = 50.0
    allow: dict[str, Path] = field(default_factory=dict)


def load_settings(path: Path) -> Settings:
    data = read_toml(path)
    settings = Settings()
    for key in ("jobs_per_device", "stop_grace_seconds", "max_upload_mb"):
        if key in data:
            value = data.pop(key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ConfigError(f"{path}: {key} must be a positive number, got {value!r}.")
            setattr(settings, key, type(getattr(settings, key))(value))
    allow = data.pop("allow", {})
    if data:
        raise ConfigError(
            f"{path}: unknown setting(s) {', '.join(sorted(data))}; known: jobs_per_device, "
            "stop_grace_seconds, max_upload_mb, [allow]."
        )
    if not isinstance(allow, dict):
        raise ConfigError(f'{path}: [allow] must be a table of NAME = "folder" lines.')
    for name, folder in allow.items():
        if not ALIAS.fullmatch(name):
            raise ConfigError(
                f"{path}: [allow] name {name!r}: use 2-32 letters, digits, '-' or '_' (it becomes @{name}/...)."
            )
        folder_path = Path(str(folder)).expanduser()
        if not isinstance(folder, str) or not folder_path.is_absolute() or not folder_path.is_dir():
            raise ConfigError(
                f"{path}: [allow] {name} = {folder!r} must be an existing folder's absolute path."
            )
        settings.allow[name] = folder_path.resolve()
    return settings


@dataclass
class Workspace:
    root: Path
    settings: Settings

    @classmethod
    def open(cls, folder: str | Path) -> Workspace:
        """Create the layout where it is missing (settings.toml with its comments) and read it."""
        root = Path(folder).expanduser().resolve()
        root.mkdir(parents=True, exist_ok=True)
        for name in FOLDERS:
            (root / name).mkdir(exist_ok=True)
        settings_path = root / SETTINGS_FILE
        if not settings_path.exists():
            settings_path.write_text(DEFAULT_SETTINGS, encoding="utf-8")
        return cls(root, load_settings(settings_path))

    @property
    def db_path(self) -> Path:
        return self.root / DB_FILE

    def roots(self) -> dict[str, Path]:
        """Location prefix -> folder: "" is the workspace, "@NAME" an allowed folder."""
        return {"": self.root, **{f"@{name}": path for name, path in self.settings.allow.items()}}

    def job_dir(self, job_id: int) -> Path:
        return self.root / "jobs" / str(job_id)
