"""Training states: what a resumed run needs to continue as if it had never stopped, written and
read back without pickles.

A state folder holds the network weights, the optimizer and schedule, every random generator
and the position in the data:

    network.safetensors                  the network's tensors
    optimizer.safetensors + .json        the optimizer's tensors / everything else
    scheduler.json                       the learning-rate schedule
    rng.safetensors + rng.json           torch (CPU, CUDA), the noise generator, numpy, python
    train_state.json                     epoch, step, batches done, losses, the run's identity

Nothing in it is a pickle, so a state downloaded from someone else cannot run code when it is
loaded (a `.pt` file in a state folder is refused). It is written to a temporary folder and
renamed, so a crash while saving leaves the previous state intact.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ..errors import LorakitError
from ..runs import RunFolder
from ..utils.files import atomic_path

STATE_FILE = "train_state.json"
FORMAT = 2


class StateError(LorakitError):
    """A training state folder lorakit will not resume from."""


# -- the random generators, captured at an optimizer-step boundary ----------------------------


@dataclass
class RngState:
    """Every generator a step draws from. Captured after each optimizer step, so a state saved
    at any moment (Ctrl-C mid-accumulation too) holds the generators as they were at the last
    completed step, which is where the resumed run starts."""

    torch_cpu: torch.Tensor
    cuda: list[torch.Tensor]
    generator: torch.Tensor
    numpy: tuple
    python: tuple

    @classmethod
    def capture(cls, generator: torch.Generator) -> RngState:
        return cls(
            torch.get_rng_state(),
            torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            generator.get_state(),
            np.random.get_state(),
            random.getstate(),
        )

    def restore(self, generator: torch.Generator) -> None:
        torch.set_rng_state(self.torch_cpu)
        if self.cuda and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(self.cuda)
        generator.set_state(self.generator)
        np.random.set_state(self.numpy)
        random.setstate(self.python)

    def write(self, folder: Path) -> None:
        tensors = {
            "torch": self.torch_cpu,
            "generator": self.generator,
            "numpy_keys": torch.from_numpy(self.numpy[1].astype(np.int64)),
        }
        tensors.update({f"cuda.{i}": t for i, t in enumerate(self.cuda)})
        save_file(tensors, str(folder / "rng.safetensors"))
        name, _, pos, has_gauss, gauss = self.numpy
        version, internal, python_gauss = self.python
        meta = {
            "numpy": [name, int(pos), int(has_gauss), float(gauss)],
            "python": [version, list(internal), python_gauss],
        }
        (folder / "rng.json").write_text(json.dumps(meta))

    @classmethod
    def read(cls, folder: Path) -> RngState:
        tensors = load_file(str(folder / "rng.safetensors"))
        meta = json.loads((folder / "rng.json").read_text())
        name, pos, has_gauss, gauss = meta["numpy"]
        version, internal, python_gauss = meta["python"]
        cuda = [tensors[f"cuda.{i}"] for i in range(sum(k.startswith("cuda.") for k in tensors))]
        keys = tensors["numpy_keys"].numpy().astype(np.uint32)
        return cls(
            tensors["torch"], cuda, tensors["generator"], (name, keys, pos, has_gauss, gauss),
            (version, tuple(internal), python_gauss),
        )  # fmt: skip


# -- where a run stands -----------------------------------------------------------------------


@dataclass
class Position:
    """Where a run stands at its last completed optimizer step: the epoch in progress, optimizer
    steps done, batches of the epoch done (this process's), the losses of the epoch's batches,
    the loss of every step, and the generators."""

    epoch: int = 1
    step: int = 0
    done: int = 0
    epoch_losses: list[float] = field(default_factory=list)
    losses: list[tuple[int, float]] = field(default_factory=list)
    rng: RngState | None = None
    updating: bool = False  # inside an optimizer step (the weights are half updated)


@dataclass
class TrainState:
    epoch: int  # the epoch in progress (1-based)
    step: int  # optimizer steps done
    batches_done: int  # batches of `epoch` already trained
    data: dict[str, Any]  # DatasetGroup.state(...).to_dict()
    extra: dict[str, Any]  # losses, epoch losses, collapse guard, ...
    identity: dict[str, Any] = field(default_factory=dict)  # RunIdentity.to_dict()


@dataclass(frozen=True)
class RunIdentity:
    """What makes two runs the same run: `--resume auto` continues only a state whose identity
    matches. The options are those that change what a step computes (not how long the run is,
    how often it saves or samples, or where it logs)."""

    output_name: str
    seed: int
    fingerprint: str  # of the dataset: images, repeats, buckets, batch size
    options: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "output_name": self.output_name,
            "seed": self.seed,
            "fingerprint": self.fingerprint,
            "options": self.options,
            "digest": hashlib.sha256(
                json.dumps(self.options, sort_keys=True, default=str).encode()
            ).hexdigest()[:16],
        }

    def differences(self, saved: dict[str, Any]) -> list[str]:
        """What differs between this run and a state's `identity`, in words (empty: the same run)."""
        if not saved:
            return []
        out = []
        if saved.get("output_name") != self.output_name:
            out.append(f"output_name '{saved.get('output_name')}' (this run: '{self.output_name}')")
        if saved.get("seed") != self.seed:
            out.append(f"seed {saved.get('seed')} (this run: {self.seed})")
        if saved.get("fingerprint") != self.fingerprint:
            out.append("another dataset (images, repeats, buckets or batch size)")
        theirs = saved.get("options", {})
        for key in sorted(set(theirs) | set(self.options)):
            if json.dumps(theirs.get(key), default=str) != json.dumps(self.options.get(key), default=str):
                out.append(f"{key} {theirs.get(key)!r} (this run: {self.options.get(key)!r})")
        return out


# -- writing and reading ----------------------------------------------------------------------


def save_state(
    folder: Path, network: torch.nn.Module, optimizer, scheduler, rng: RngState, state: TrainState
) -> Path:
    with atomic_path(folder) as tmp:
        tmp.mkdir()
        save_file(
            {k: v.detach().contiguous() for k, v in network.state_dict().items()},
            str(tmp / "network.safetensors"),
        )
        _write_tree(tmp / "optimizer", optimizer.state_dict())
        (tmp / "scheduler.json").write_text(json.dumps(_encode(scheduler.state_dict(), {}, "")))
        rng.write(tmp)
        (tmp / STATE_FILE).write_text(
            json.dumps(
                {
                    "lorakit_state": FORMAT,
                    "current_epoch": state.epoch,
                    "current_step": state.step,
                    "batches_done": state.batches_done,
                    "data": state.data,
                    "extra": state.extra,
                    "identity": state.identity,
                },
                indent=2,
                default=str,
            )
        )
    return folder


def read_info(folder: Path) -> dict[str, Any]:
    """train_state.json of a state folder, checked to be one lorakit can resume from."""
    info = folder / STATE_FILE
    if not info.exists():
        raise StateError(
            f"{folder} is not a lorakit training state (no {STATE_FILE}). Pass a folder named "
            "NAME-NNNNNN-state from the output folder, or --resume auto."
        )
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in (".pt", ".pth", ".pkl", ".bin", ".ckpt"))
    if pickles:
        raise StateError(
            f"{folder} holds {', '.join(pickles)}: pickle files, which can run code when loaded, so lorakit "
            "does not read them. States written by lorakit hold only .safetensors and .json files; "
            "continue from a LoRA file instead (network_weights)."
        )
    try:
        return json.loads(info.read_text())
    except ValueError as e:
        raise StateError(
            f"{info} is not valid JSON ({e}); the state is damaged. Use an earlier state."
        ) from e


def load_state(folder: Path, network: torch.nn.Module, optimizer, scheduler) -> tuple[TrainState, RngState]:
    meta = read_info(folder)
    if meta.get("lorakit_state") != FORMAT:
        raise StateError(
            f"{folder} was saved by an older lorakit in a format that used pickles; it cannot be resumed. "
            "Continue from its LoRA file with network_weights instead."
        )
    network.load_state_dict(load_file(str(folder / "network.safetensors")))
    optimizer.load_state_dict(_read_tree(folder / "optimizer"))
    scheduler.load_state_dict(_decode(json.loads((folder / "scheduler.json").read_text()), {}))
    state = TrainState(
        meta["current_epoch"], meta["current_step"], meta["batches_done"], meta["data"], meta["extra"],
        meta.get("identity", {}),
    )  # fmt: skip
    return state, RngState.read(folder)


def latest_state(folder: RunFolder, identity: RunIdentity | None = None) -> tuple[Path | None, list[str]]:
    """This run's state with the most steps done, for `resume = "auto"`, and why each other
    state was passed over."""
    best, best_step, skipped = None, -1, []
    for state in folder.states():
        try:
            meta = read_info(state)
        except StateError as e:
            skipped.append(f"{state.name}: {e}")
            continue
        differences = identity.differences(meta.get("identity", {})) if identity else []
        if meta.get("lorakit_state") != FORMAT:
            differences = ["saved by an older lorakit (pickle files)"]
        if differences:
            skipped.append(f"{state.name}: saved with {'; '.join(differences)}")
            continue
        if meta.get("current_step", -1) > best_step:
            best, best_step = state, meta["current_step"]
    return best, skipped


# -- state dicts as safetensors + JSON: tensors by path, the rest as JSON with tuples kept -----


def _write_tree(base: Path, tree: Any) -> None:
    tensors: dict[str, torch.Tensor] = {}
    base.with_suffix(".json").write_text(json.dumps(_encode(tree, tensors, "")))
    save_file(
        {k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(base.with_suffix(".safetensors"))
    )


def _read_tree(base: Path) -> Any:
    return _decode(
        json.loads(base.with_suffix(".json").read_text()), load_file(str(base.with_suffix(".safetensors")))
    )


def _encode(value: Any, tensors: dict[str, torch.Tensor], path: str) -> Any:
    if isinstance(value, torch.Tensor):
        tensors[path] = value
        return {"__tensor__": path}
    if isinstance(value, dict):
        return {
            "__dict__": [
                [_encode(k, tensors, f"{path}.k{i}"), _encode(v, tensors, f"{path}.{i}")]
                for i, (k, v) in enumerate(value.items())
            ]
        }
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v, tensors, f"{path}.{i}") for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_encode(v, tensors, f"{path}.{i}") for i, v in enumerate(value)]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise StateError(f"cannot save a {type(value).__name__} in a training state (at {path or 'the top'}).")


def _decode(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, list):
        return [_decode(v, tensors) for v in value]
    if isinstance(value, dict):
        if "__tensor__" in value:
            return tensors[value["__tensor__"]]
        if "__tuple__" in value:
            return tuple(_decode(v, tensors) for v in value["__tuple__"])
        if "__dict__" in value:
            return {_decode(k, tensors): _decode(v, tensors) for k, v in value["__dict__"]}
    return value
