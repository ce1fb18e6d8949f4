"""The files of one training run in its output folder, by name: the one place that knows them.

sd-scripts' names, so a folder made by either tool reads the same:

    NAME.safetensors                 the final network
    NAME-000003.safetensors          after epoch 3
    NAME-step00000500.safetensors    after step 500
    NAME-000003-state/ NAME-step00000500-state/ NAME-state/   training states (resume)
    NAME-embeddings/ NAME-000003-embeddings/   a file's trained words as embedding files (pivotal)
    NAME-config.toml  NAME-loss.png  run.json  sample/  logs/
    NAME-lr-find.png                 the plot of `lorakit lr-find` (its only file)

The training loop writes through `RunFolder`; `lorakit grid --run`, the quickstart and the web UI
read through it, so a name changed here changes for all of them.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

RUN_FILE = "run.json"
EVENTS_FILE = "events.jsonl"  # the run's events as JSON lines, for the web UI (training/events.py)
CONTROL_DIR = ".lorakit-control"  # requests to a running training (training/control.py)

# an epoch number at the end of a file's stem, as sd-scripts and other trainers write it:
# name-000003, name_3, name-e3, name-epoch3
_EPOCH = re.compile(r"[-_](?:e|epoch)?(\d+)$", re.IGNORECASE)


def epoch_of(path: str | Path) -> int | None:
    """sd-scripts' epoch suffix: `name-000003` -> 3; None for the final `name` (and step files)."""
    m = _EPOCH.search(Path(path).stem)
    return int(m[1]) if m else None


def sort_by_epoch(paths) -> list[Path]:
    """Epoch files in epoch order; files without a number (the final save) after them."""
    return sorted((Path(p) for p in paths), key=lambda p: (epoch_of(p) is None, epoch_of(p) or 0, p.name))


@dataclass(frozen=True)
class RunFolder:
    root: Path
    name: str
    ext: str = "safetensors"  # "" for outputs that are folders (a DreamBooth model in diffusers layout)

    @property
    def suffix(self) -> str:
        return f".{self.ext}" if self.ext else ""

    # ---- networks (or whatever the run trains) ----------------------------------------------
    def epoch_file(self, epoch: int) -> Path:
        return self.root / f"{self.name}-{epoch:06d}{self.suffix}"

    def step_file(self, step: int) -> Path:
        return self.root / f"{self.name}-step{step:08d}{self.suffix}"

    @property
    def final_file(self) -> Path:
        return self.root / f"{self.name}{self.suffix}"

    def embeddings_of(self, file: Path) -> Path:
        """The folder of embedding files exported beside the network file `file` (pivotal tuning)."""
        stem = file.name[: len(file.name) - len(self.suffix)]
        return file.with_name(f"{stem}-embeddings")

    # ---- training states -------------------------------------------------------------------
    def epoch_state(self, epoch: int) -> Path:
        return self.root / f"{self.name}-{epoch:06d}-state"

    def step_state(self, step: int) -> Path:
        return self.root / f"{self.name}-step{step:08d}-state"

    @property
    def final_state(self) -> Path:
        return self.root / f"{self.name}-state"

    def states(self) -> list[Path]:
        """This run's state folders (only its own name: `lora` never matches `lora-v2`'s)."""
        if not self.root.is_dir():
            return []
        own = re.compile(rf"{re.escape(self.name)}(-\d{{6}}|-step\d{{8}})?-state")
        return sorted(p for p in self.root.iterdir() if p.is_dir() and own.fullmatch(p.name))

    # ---- everything else -------------------------------------------------------------------
    @property
    def samples(self) -> Path:
        return self.root / "sample"

    def sample_file(self, label: str, index: int) -> Path:
        return self.samples / f"{self.name}_{label}_{index:02d}.png"

    def strip_file(self, label: str) -> Path:
        return self.samples / f"{self.name}_{label}_strip.png"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def config_copy(self) -> Path:
        return self.root / f"{self.name}-config.toml"

    @property
    def loss_plot(self) -> Path:
        return self.root / f"{self.name}-loss.png"

    @property
    def lr_find_plot(self) -> Path:
        """`lorakit lr-find`'s plot, the only file it writes."""
        return self.root / f"{self.name}-lr-find.png"

    @property
    def record(self) -> Path:
        return self.root / RUN_FILE

    @property
    def events(self) -> Path:
        return self.root / EVENTS_FILE

    @property
    def control(self) -> Path:
        return self.root / CONTROL_DIR

    def files(self) -> list[Path]:
        """Every file and state folder of this run in the folder (run.json aside), by its names."""
        name = re.escape(self.name)
        own = re.compile(
            rf"{name}(-\d{{6}}|-step\d{{8}})?({re.escape(self.suffix)}|-state|-embeddings)|{name}-config\.toml|"
            rf"{name}-loss\.png"
        )
        found = [p for p in self.root.iterdir() if own.fullmatch(p.name)] if self.root.is_dir() else []
        if self.samples.is_dir():
            found += [
                p for p in self.samples.iterdir() if p.name.startswith(f"{self.name}_") and p.suffix == ".png"
            ]
        return sorted(found)

    # ---- keeping the last N ----------------------------------------------------------------
    def prune_epoch_files(self, keep: int | None) -> list[Path]:
        return self._with_embeddings(_prune(self.root, rf"{re.escape(self.name)}-\d{{6}}{re.escape(self.suffix)}", keep))

    def prune_step_files(self, keep: int | None) -> list[Path]:
        return self._with_embeddings(
            _prune(self.root, rf"{re.escape(self.name)}-step\d{{8}}{re.escape(self.suffix)}", keep)
        )

    def _with_embeddings(self, removed: list[Path]) -> list[Path]:
        """The pruned files' exported embeddings go with them."""
        for path in removed:
            if self.embeddings_of(path).is_dir():
                shutil.rmtree(self.embeddings_of(path))
        return removed

    def prune_epoch_states(self, keep: int | None) -> list[Path]:
        return _prune(self.root, rf"{re.escape(self.name)}-\d{{6}}-state", keep)

    def prune_step_states(self, keep: int | None) -> list[Path]:
        return _prune(self.root, rf"{re.escape(self.name)}-step\d{{8}}-state", keep)


def _prune(folder: Path, pattern: str, keep: int | None) -> list[Path]:
    """Delete all but the newest `keep` matches of `pattern` (numbered names sort by number)."""
    if not keep or not folder.is_dir():
        return []
    rx = re.compile(pattern)
    found = sorted((p for p in folder.iterdir() if rx.fullmatch(p.name)), key=lambda p: p.name)
    removed = found[: max(0, len(found) - keep)]
    for path in removed:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    return removed
