"""The learning-rate finder users already practise by hand (see the lora-scripts tutorials):
train briefly with D-Adaptation (or Prodigy) at lr 1 and a constant schedule, watch the step size
it settles on (d·lr), then train AdamW at that rate or Lion at a third of it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..utils.files import atomic_path
from .config import TrainConfig
from .recipe import train

FINDERS = ("DAdaptation", "DAdaptAdam", "Prodigy")


@dataclass
class LrSuggestion:
    steps: list[int]
    dlr: list[float]  # effective step size per step
    settled: float  # median over the last quarter of the steps
    plot: Path | None

    @property
    def adamw(self) -> float:
        return self.settled

    @property
    def lion(self) -> float:
        return self.settled / 3


def settled_value(values: list[float]) -> float:
    tail = sorted(values[-max(1, len(values) // 4) :])
    middle = len(tail) // 2
    return tail[middle] if len(tail) % 2 else (tail[middle - 1] + tail[middle]) / 2


def find_lr(
    config: TrainConfig, steps: int = 200, optimizer: str = "DAdaptation", quiet: bool = False
) -> LrSuggestion:
    for name, value in {
        "optimizer_type": optimizer,
        "learning_rate": 1.0,
        "unet_lr": 1.0,
        "text_encoder_lr": 1.0,
        "lr_scheduler": "constant",
        "lr_warmup_steps": 0,
        "max_train_steps": steps,
        "max_train_epochs": None,
        "save_every_n_epochs": None,
        "save_every_n_steps": None,
        "sample_every_n_epochs": None,
        "sample_every_n_steps": None,
        "sample_at_first": False,
        "log_with": "none",
    }.items():
        config.set(name, value, "lr-find")
    out = Path(config.output_dir) / "lr-find"
    config.set("output_dir", str(out), "lr-find")
    seen_steps, seen = [], []

    def record(step, loss, lrs):
        seen_steps.append(step)
        seen.append(lrs[0])

    train(config, quiet=quiet, on_step=record, save_files=False)
    plot = _plot(seen_steps, seen, out / "lr-find.png")
    return LrSuggestion(seen_steps, seen, settled_value(seen), plot)


def _plot(steps, values, path: Path) -> Path | None:
    if not values:
        return None
    import matplotlib  # only when a plot is drawn: importing it costs every start a second

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    ax.plot(steps, values, color="#1f5fa8")
    settled = settled_value(values)
    ax.axhline(settled, color="#d0521b", linestyle="--", label=f"settled: {settled:.2e}")
    ax.set_xlabel("step")
    ax.set_ylabel("d x lr (the step size the optimizer chose)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path
