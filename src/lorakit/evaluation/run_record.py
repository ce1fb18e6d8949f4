"""The run record `run.json` that training writes into its output folder, as read by
`lorakit grid --run`.

Fields read (all optional except `epochs`; paths are relative to the output folder):

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

Without a run.json the folder's LoRA files are used, ordered by epoch as sd-scripts names them
(`name-000001.safetensors` ... and `name.safetensors` for the last), with no losses.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import LorakitError

RUN_FILE = "run.json"


class RunError(LorakitError):
    """A training output folder lorakit cannot read."""


@dataclass
class EpochRecord:
    epoch: int | None
    file: Path
    validation_loss: float | None = None


@dataclass
class RunRecord:
    folder: Path
    epochs: list[EpochRecord]
    base_model: Path | None = None
    v_parameterization: bool | None = None
    clip_skip: int | None = None
    sample_prompts: str | Path | list | None = None
    sample_sampler: str | None = None
    output_name: str | None = None
    raw: dict = field(default_factory=dict)

    def best_epoch(self) -> EpochRecord | None:
        """The epoch with the lowest validation loss (the first of equals), if any has one."""
        scored = [e for e in self.epochs if e.validation_loss is not None]
        return min(scored, key=lambda e: e.validation_loss) if scored else None


_EPOCH = re.compile(r"[-_](?:e|epoch)?(\d+)$", re.IGNORECASE)


def epoch_of(path: Path) -> int | None:
    """sd-scripts' epoch suffix: `name-000003` -> 3; None for the final `name`."""
    m = _EPOCH.search(Path(path).stem)
    return int(m[1]) if m else None


def sort_by_epoch(paths) -> list[Path]:
    """Epoch files in epoch order; files without a number (the final save) after them."""
    return sorted((Path(p) for p in paths), key=lambda p: (epoch_of(p) is None, epoch_of(p) or 0, p.name))


def load_run(folder: str | Path) -> RunRecord:
    folder = Path(folder)
    if not folder.is_dir():
        raise RunError(f"training output folder {folder} does not exist.")
    record_path = folder / RUN_FILE
    if not record_path.is_file():
        files = sort_by_epoch(p for p in folder.glob("*.safetensors"))
        if not files:
            raise RunError(
                f"{folder} has no {RUN_FILE} and no .safetensors files. Point --run at the output "
                "folder of a training run."
            )
        return RunRecord(folder, [EpochRecord(epoch_of(p), p) for p in files])
    try:
        data = json.loads(record_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise RunError(f"{record_path} is not valid JSON: {e}") from e
    epochs = []
    for i, item in enumerate(data.get("epochs") or []):
        if not isinstance(item, dict) or "file" not in item:
            raise RunError(f"{record_path}: epochs[{i}] needs a 'file' entry: {item!r}")
        path = _resolve(folder, item["file"])
        if not path.is_file():
            raise RunError(f"{record_path}: epochs[{i}] names {path}, which does not exist.")
        loss = item.get("validation_loss")
        epochs.append(
            EpochRecord(item.get("epoch", epoch_of(path)), path, float(loss) if loss is not None else None)
        )
    if not epochs:
        raise RunError(f"{record_path} lists no epochs; was the run saved at least once?")
    prompts = data.get("sample_prompts")
    if isinstance(prompts, str):
        prompts = _resolve(folder, prompts)
    base = data.get("base_model")
    return RunRecord(
        folder=folder,
        epochs=epochs,
        base_model=_resolve(folder, base) if base else None,
        v_parameterization=data.get("v_parameterization"),
        clip_skip=data.get("clip_skip"),
        sample_prompts=prompts,
        sample_sampler=data.get("sample_sampler"),
        output_name=data.get("output_name"),
        raw=data,
    )


def _resolve(folder: Path, value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else folder / path


def loss_table(record: RunRecord) -> str:
    """Per-epoch validation loss, the lowest marked, for printing beside the grid."""
    best = record.best_epoch()
    rows = [("epoch", "file", "validation loss", "")]
    for e in record.epochs:
        loss = f"{e.validation_loss:.5f}" if e.validation_loss is not None else "-"
        rows.append(
            (
                str(e.epoch) if e.epoch is not None else "final",
                e.file.name,
                loss,
                "<- lowest" if e is best else "",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [f"{r[0]:>{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]}".rstrip() for r in rows]
    if best is None:
        lines.append("(the run recorded no validation loss; train with a validation split to get one)")
    return "\n".join(lines)
