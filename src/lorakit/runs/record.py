"""`run.json`: what a training run was, on what, how it went and what it wrote. Written by the
training loop, read by `lorakit grid --run`, the quickstart and the web UI's run list: one
class for both, so writer and reader cannot drift apart.

The fields a reader needs (all optional except `epochs`; paths relative to the folder):

    {
      "output_name": "mylora",
      "base_model": "/models/v1-5-pruned.safetensors",
      "v_parameterization": false,
      "clip_skip": 2,
      "sample_prompts": "prompts.txt",          # a prompt file, or a list of lines / tables
      "sample_sampler": "euler_a",              # sd-scripts or A1111 sampler name
      "epochs": [
        {"epoch": 1, "file": "mylora-000001.safetensors", "validation_loss": 0.1234},
        {"epoch": 2, "file": "mylora-000002.safetensors", "validation_loss": 0.1187}
      ]
    }

The training loop also records `config`, `model`, `dataset`, `plan`, `losses`, `files`, `status`
and times. Without a run.json a folder's network files are read as the epochs, ordered as
sd-scripts names them (`name-000001.safetensors` ... and `name.safetensors` for the last).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import LorakitError
from ..utils.files import atomic_path
from .folder import RUN_FILE, epoch_of, sort_by_epoch


class RunError(LorakitError):
    """A training output folder lorakit cannot read."""


@dataclass
class EpochRecord:
    epoch: int | None
    file: Path
    validation_loss: float | None = None


class RunRecord:
    """The record of the run in `folder`, as a dict (`data`) with typed views for readers."""

    def __init__(self, folder: Path, data: dict[str, Any]):
        self.folder = Path(folder)
        self.data = data

    @property
    def path(self) -> Path:
        return self.folder / RUN_FILE

    # ---- writing (the training loop) --------------------------------------------------------
    @classmethod
    def start(
        cls, folder: Path, config: dict, dataset: dict, plan: dict, model: dict, resumed: bool = False, **top
    ) -> RunRecord:
        """A new record, or with `resumed` the existing one (its history kept). `top`: the
        fields readers use (output_name, base_model, clip_skip, v_parameterization,
        sample_prompts, sample_sampler)."""
        record = cls(folder, {})
        if resumed and record.path.exists():
            record.data = json.loads(record.path.read_text(encoding="utf-8"))
            record.data.setdefault("resumed_at", []).append(_now())
            record.data["config"] = config
            record.data.update(top, status="running")
        else:
            record.data = {
                "lorakit_run": 1,
                "started_at": _now(),
                "config": config,
                "model": model,
                "dataset": dataset,
                "plan": plan,
                "epochs": [],
                "files": [],
                "losses": [],
                "status": "running",
                **top,
            }
        record.write()
        return record

    def add_epoch(
        self, epoch: int, step: int, loss: float, validation_loss: float | None, file: str | None
    ) -> None:
        self.data["epochs"] = [e for e in self.data["epochs"] if e["epoch"] != epoch]
        self.data["epochs"].append(
            {"epoch": epoch, "step": step, "loss": loss, "validation_loss": validation_loss, "file": file}
        )
        self.write()

    def add_file(self, path: str) -> None:
        if path not in self.data["files"]:
            self.data["files"].append(path)

    def finish(self, status: str, **extra) -> None:
        self.data.update(status=status, finished_at=_now(), **extra)
        self.write()

    def write(self) -> None:
        """Atomically: a reader (or a crash) never sees half a file."""
        with atomic_path(self.path) as tmp:
            tmp.write_text(json.dumps(self.data, indent=2, ensure_ascii=False, default=str), encoding="utf-8")

    # ---- reading ----------------------------------------------------------------------------
    @property
    def epochs(self) -> list[EpochRecord]:
        """The epochs that saved a file, in the order recorded."""
        out = []
        for item in self.data.get("epochs") or []:
            if item.get("file"):
                loss = item.get("validation_loss")
                path = self._resolve(item["file"])
                out.append(
                    EpochRecord(
                        item.get("epoch", epoch_of(path)), path, float(loss) if loss is not None else None
                    )
                )
        return out

    def best_epoch(self) -> EpochRecord | None:
        """The epoch with the lowest validation loss (the first of equals), if any has one."""
        scored = [e for e in self.epochs if e.validation_loss is not None]
        return min(scored, key=lambda e: e.validation_loss) if scored else None

    @property
    def base_model(self) -> Path | None:
        base = self.data.get("base_model")
        return self._resolve(base) if base else None

    @property
    def sample_prompts(self) -> str | Path | list | None:
        prompts = self.data.get("sample_prompts")
        return self._resolve(prompts) if isinstance(prompts, str) else prompts

    @property
    def output_name(self) -> str | None:
        return self.data.get("output_name")

    @property
    def v_parameterization(self) -> bool | None:
        return self.data.get("v_parameterization")

    @property
    def clip_skip(self) -> int | None:
        return self.data.get("clip_skip")

    @property
    def sample_sampler(self) -> str | None:
        return self.data.get("sample_sampler")

    def _resolve(self, value: str) -> Path:
        path = Path(value).expanduser()
        return path if path.is_absolute() else self.folder / path


def load_run(folder: str | Path) -> RunRecord:
    """The record of a finished (or running) run, checked: every epoch it names must exist."""
    folder = Path(folder)
    if not folder.is_dir():
        raise RunError(f"training output folder {folder} does not exist.")
    path = folder / RUN_FILE
    if not path.is_file():
        files = sort_by_epoch(folder.glob("*.safetensors"))
        if not files:
            raise RunError(
                f"{folder} has no {RUN_FILE} and no .safetensors files. Point --run at the output "
                "folder of a training run."
            )
        return RunRecord(folder, {"epochs": [{"epoch": epoch_of(p), "file": p.name} for p in files]})
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise RunError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(data, dict):
        raise RunError(f"{path} is not a run record (a JSON object with 'epochs').")
    for i, item in enumerate(data.get("epochs") or []):
        if not isinstance(item, dict) or "file" not in item:
            raise RunError(f"{path}: epochs[{i}] needs a 'file' entry: {item!r}")
    record = RunRecord(folder, data)
    for i, epoch in enumerate(record.epochs):
        if not epoch.file.is_file():
            raise RunError(f"{path}: epochs[{i}] names {epoch.file}, which does not exist.")
    if not record.epochs:
        raise RunError(f"{path} lists no saved epochs; was the run saved at least once?")
    return record


def keep_epoch(folder: str | Path, epoch: int | None, target: str | Path) -> Path:
    """Copy the LoRA file of `epoch` (None: the final file) to `target` and record the choice in
    run.json under "kept" (the user picked it, e.g. from the epoch x weight grid). An existing
    target is never overwritten."""
    record = load_run(folder)
    chosen = [e for e in record.epochs if e.epoch == epoch]
    if not chosen:
        saved = ", ".join("final" if e.epoch is None else str(e.epoch) for e in record.epochs)
        raise RunError(f"{record.folder}: epoch {epoch} saved no file; saved epochs: {saved}.")
    target = Path(target)
    if target.exists():
        raise RunError(f"{target} exists already; choose another name.")
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp:
        shutil.copy2(chosen[-1].file, tmp)
    kept = record.data.setdefault("kept", [])
    kept.append({"epoch": epoch, "file": chosen[-1].file.name, "copy": str(target), "at": _now()})
    record.write()
    return target


def loss_table(record: RunRecord) -> str:
    """Per-epoch validation loss, the lowest marked, for printing beside the grid."""
    epochs = record.epochs
    best = record.best_epoch()
    rows = [("epoch", "file", "validation loss", "")]
    for e in epochs:
        loss = f"{e.validation_loss:.5f}" if e.validation_loss is not None else "-"
        rows.append(
            (
                str(e.epoch) if e.epoch is not None else "final",
                e.file.name,
                loss,
                "<- lowest" if e == best else "",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [f"{r[0]:>{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]}".rstrip() for r in rows]
    if best is None:
        lines.append("(the run recorded no validation loss; train with a validation split to get one)")
    return "\n".join(lines)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")
