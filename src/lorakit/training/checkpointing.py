"""Training states: what a resumed run needs, written and read back.

A state folder holds everything a resumed run needs to continue as if it had never stopped: the
network weights, optimizer and scheduler state, every random generator, the loss history and the
position in the data (`train_state.json`: epoch, step, batches done). It is written to a temporary
folder and renamed, so a crash while saving leaves the previous state intact.
"""

from __future__ import annotations

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


@dataclass
class Position:
    """Where a run stands: the epoch in progress, optimizer steps done, batches of the epoch
    done (this process's), and the loss of every step so far."""

    epoch: int = 1
    step: int = 0
    done: int = 0
    losses: list[tuple[int, float]] = field(default_factory=list)


@dataclass
class TrainState:
    epoch: int  # the epoch in progress (1-based); when batches_done == batches of it, it is complete
    step: int  # optimizer steps done
    batches_done: int  # batches of `epoch` already trained (all processes together)
    data: dict[str, Any]  # DatasetGroup.state(...).to_dict()
    extra: dict[str, Any]  # loss history, collapse guard, ...


def save_state(
    folder: Path,
    network: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler,
    generator: torch.Generator,
    state: TrainState,
) -> Path:
    with atomic_path(folder) as tmp:
        tmp.mkdir()
        save_file(
            {k: v.detach().contiguous() for k, v in network.state_dict().items()},
            str(tmp / "network.safetensors"),
        )
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        torch.save(
            {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "numpy": np.random.get_state(),
                "python": random.getstate(),
                "generator": generator.get_state(),
            },
            tmp / "rng.pt",
        )
        (tmp / "train_state.json").write_text(
            json.dumps(
                {
                    "current_epoch": state.epoch,
                    "current_step": state.step,
                    "batches_done": state.batches_done,
                    "data": state.data,
                    "extra": state.extra,
                },
                indent=2,
                default=str,
            )
        )
    return folder


def latest_state(folder: RunFolder) -> Path | None:
    """This run's state folder with the most steps done, for `resume = "auto"`."""
    best, best_step = None, -1
    for state in folder.states():
        info = state / "train_state.json"
        if info.exists():
            step = json.loads(info.read_text()).get("current_step", -1)
            if step > best_step:
                best, best_step = state, step
    return best


def load_state(
    folder: Path, network: torch.nn.Module, optimizer, scheduler, generator: torch.Generator
) -> TrainState:
    info = folder / "train_state.json"
    if not info.exists():
        raise LorakitError(
            f"{folder} is not a lorakit training state (no train_state.json). Pass a folder named "
            'NAME-NNNNNN-state from the output folder, or resume = "auto".'
        )
    meta = json.loads(info.read_text())
    network.load_state_dict(load_file(str(folder / "network.safetensors")))
    optimizer.load_state_dict(torch.load(folder / "optimizer.pt", weights_only=False))
    scheduler.load_state_dict(torch.load(folder / "scheduler.pt", weights_only=False))
    rng = torch.load(folder / "rng.pt", weights_only=False)
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    np.random.set_state(rng["numpy"])
    random.setstate(rng["python"])
    generator.set_state(rng["generator"])
    return TrainState(
        meta["current_epoch"], meta["current_step"], meta["batches_done"], meta["data"], meta["extra"]
    )
