"""When a run writes its network files and training states, and how many it keeps: sd-scripts'
`save_every_n_*` / `save_last_n_*` rules in one place."""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from safetensors import SafetensorError

from ..errors import LorakitError
from ..runs import RunFolder, RunRecord
from . import checkpointing as ckpt
from .options import ConfigOptions
from .outputs import as_os_error, disk_message

_PRECISIONS = {"float": "float", "fp16": "fp16", "bf16": "bf16"}


@dataclass(frozen=True)
class SaveOptions(ConfigOptions):
    save_every_n_epochs: int | None = None
    save_every_n_steps: int | None = None
    save_n_epoch_ratio: int | None = None
    save_last_n_epochs: int | None = None
    save_last_n_steps: int | None = None
    save_state: bool = False
    save_state_on_train_end: bool = False
    save_last_n_epochs_state: int | None = None
    save_last_n_steps_state: int | None = None
    save_precision: str | None = None
    metadata_title: str | None = None
    metadata_author: str | None = None
    metadata_description: str | None = None
    metadata_license: str | None = None
    metadata_tags: str | None = None
    metadata_trigger_phrase: str | None = None

    def every_epochs(self, epochs: int) -> int | None:
        """save_every_n_epochs, or save_n_epoch_ratio's "about N times over the run"."""
        if self.save_every_n_epochs:
            return self.save_every_n_epochs
        return max(1, epochs // self.save_n_epoch_ratio) if self.save_n_epoch_ratio else None

    def modelspec(self, name: str) -> dict[str, str]:
        spec = {
            "title": self.metadata_title,
            "author": self.metadata_author,
            "description": self.metadata_description,
            "license": self.metadata_license,
            "tags": self.metadata_tags,
            "trigger_phrase": self.metadata_trigger_phrase,
        }
        return {"title": self.metadata_title or name, **{k: v for k, v in spec.items() if v}}


def steps_to_files(last_n_steps: int | None, every: int | None) -> int | None:
    """save_last_n_steps counts steps; keep the files saved within that many steps."""
    if not last_n_steps or not every:
        return None
    return max(1, math.ceil(last_n_steps / every))


@dataclass
class Saver:
    """Writes the network files and training states of one run (main process only) and keeps
    run.json's file list. `metadata(epoch, step)` gives the ss_* keys of a file. A file is
    written only from sane weights, and a full disk or a read-only folder stops the run with
    a message that says so (the temporary file is removed, earlier files stay)."""

    options: SaveOptions
    folder: RunFolder
    network: object  # LoRANetwork
    optimizer: object
    lr_scheduler: object
    guard: object  # CollapseGuard
    group: object  # DatasetGroup
    record: RunRecord
    runtime: object
    metadata: Callable[[int, int], dict]
    identity: ckpt.RunIdentity
    total_steps: int
    epochs: int
    events: object  # EventLog
    enabled: bool = True
    epoch_files: list[Path] = field(default_factory=list)

    @property
    def writes(self) -> bool:
        return self.enabled and self.runtime.is_main_process

    def network_file(self, path: Path, epoch: int, step: int) -> Path:
        if not self.writes:
            return path
        problem = self.network.weight_problem()
        if problem:
            self.guard.pending = None
            self.guard.stop(
                f"the network is broken at step {step} ({problem}), so {path.name} was not written"
            )
        size = sum(t.numel() * t.element_size() for t in self.network.state_dict().values())
        with self.disk(path, size):
            self.network.save(
                path,
                metadata=self.metadata(epoch, step),
                precision=_PRECISIONS.get(self.options.save_precision or ""),
                modelspec=self.options.modelspec(self.folder.name),
            )
        self.guard.saved(str(path))
        self.update_record()
        self.events.emit("saved", step=step, epoch=epoch, what=self.network.kind, path=path)
        return path

    def state(self, path: Path, pos: ckpt.Position, epoch: int, done: int) -> None:
        """A state that resumes at batch `done` of `epoch`, with the generators of the last step."""
        if self.writes:
            epoch_losses = pos.epoch_losses if epoch == pos.epoch else []
            state = ckpt.TrainState(
                epoch,
                pos.step,
                done,
                self.group.state(epoch, done).to_dict(),
                {"losses": pos.losses, "epoch_losses": epoch_losses, "guard": self.guard.state_dict()},
                self.identity.to_dict(),
            )
            with self.disk(path):
                ckpt.save_state(path, self.network, self.optimizer, self.lr_scheduler, pos.rng, state)
            self.update_record()
            self.events.emit("saved", step=pos.step, epoch=epoch, what="state", path=path)
        self.runtime.wait_for_everyone()

    @contextmanager
    def disk(self, path: Path, size: int | None = None):
        """OSError while writing `path` -> a LorakitError naming the folder and the space."""
        try:
            yield
        except (OSError, SafetensorError) as e:
            os_error = as_os_error(e)
            if os_error is None:
                raise
            raise SaveFailed(disk_message(os_error, path, size)) from e

    def update_record(self) -> None:
        """run.json lists every file of the run that exists now (pruned ones gone)."""
        if self.writes:
            self.record.data["files"] = [str(p) for p in self.folder.files()]
            with self.disk(self.record.path):
                self.record.write()

    def after_step(self, pos: ckpt.Position) -> None:
        o, f = self.options, self.folder
        every = o.save_every_n_steps
        if not every or pos.step % every or pos.step >= self.total_steps:
            return
        self.network_file(f.step_file(pos.step), pos.epoch, pos.step)
        f.prune_step_files(steps_to_files(o.save_last_n_steps, every))
        if o.save_state:
            self.state(f.step_state(pos.step), pos, pos.epoch, pos.done)
            f.prune_step_states(steps_to_files(o.save_last_n_steps_state, every))
        self.update_record()

    def after_epoch(self, pos: ckpt.Position, last: bool) -> Path | None:
        """The file saved for this epoch (None if none): on the save schedule, and always the
        final file at the end."""
        o, f, epoch = self.options, self.folder, pos.epoch
        every = o.every_epochs(self.epochs)
        if last:
            file = self.network_file(f.final_file, epoch, pos.step)
            if o.save_state or o.save_state_on_train_end:
                self.state(f.final_state, pos, epoch + 1, 0)
            return file
        if not every or epoch % every:
            return None
        file = self.network_file(f.epoch_file(epoch), epoch, pos.step)
        self.epoch_files.append(file)
        f.prune_epoch_files(o.save_last_n_epochs)
        if o.save_state:
            self.state(f.epoch_state(epoch), pos, epoch + 1, 0)
            f.prune_epoch_states(o.save_last_n_epochs_state)
        self.update_record()
        return file

    def now(self, pos: ckpt.Position) -> None:
        """ "Save now" (the web UI, `lorakit train --control save`): the network and a state at
        this step, under the step names."""
        self.network_file(self.folder.step_file(pos.step), pos.epoch, pos.step)
        self.state(self.folder.step_state(pos.step), pos, pos.epoch, pos.done)

    def interrupted(self, pos: ckpt.Position) -> Path | None:
        """Ctrl-C / SIGTERM: a state to continue from, at the last completed step (none before
        the first step)."""
        if pos.step == 0 or not self.writes:
            return None
        self.state(self.folder.final_state, pos, pos.epoch, pos.done)
        return self.folder.final_state


class SaveFailed(LorakitError):
    """A network file, state or run.json could not be written (disk full, no permission)."""
