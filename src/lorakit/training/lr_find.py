"""The learning-rate finder users already practise by hand (see the lora-scripts tutorials):
train briefly with D-Adaptation (or Prodigy) at lr 1 and a constant schedule, watch the step size
it settles on (d·lr), then train AdamW at that rate or Lion at a third of it."""

from __future__ import annotations

import math
import statistics
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from ..runs import RunFolder
from ..utils.files import atomic_path
from .config import TrainConfig
from .recipe import train
from .watch import TrainingCollapsed

FINDERS = ("DAdaptation", "DAdaptAdam", "Prodigy")
# A run whose loss at the end is this many times its loss at the start has diverged: the step
# size the optimizer settled on is too large to suggest (a learning run's loss falls or stays).
DIVERGED_RATIO = 3.0
MIN_JUDGED_STEPS = 20  # below this, per-step losses (random noise levels) are too noisy to judge


@dataclass
class LrSuggestion:
    steps: list[int]
    dlr: list[float]  # effective step size per step
    settled: float  # median over the last quarter of the steps
    plot: Path | None
    losses: list[float] = field(default_factory=list)
    diverged: str | None = None  # why the run gives no suggestion (None: it did not diverge)

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


def divergence(losses: list[float]) -> str | None:
    """How the loss diverged, or None: the median loss of the last quarter of the steps against
    that of the first quarter (medians, because one step's loss depends on its random noise level)."""
    bad = next((i for i, loss in enumerate(losses) if not math.isfinite(loss)), None)
    if bad is not None:
        return f"the loss became {losses[bad]} at step {bad + 1}"
    if len(losses) < MIN_JUDGED_STEPS:
        return None
    quarter = len(losses) // 4
    start, end = statistics.median(losses[:quarter]), statistics.median(losses[-quarter:])
    if end > DIVERGED_RATIO * start:
        return (
            f"the loss rose from {start:.4f} (median of the first {quarter} steps) to {end:.4f} "
            f"(median of the last {quarter})"
        )
    return None


def finder_config(config: TrainConfig, steps: int, optimizer: str, output_dir: Path) -> None:
    """The config changed into a finder run: the self-tuning optimizer at lr 1 and a constant
    schedule, in `output_dir`, with nothing saved, sampled, logged, resumed or cached to disk."""
    changes = {
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
        "save_state": False,
        "sample_every_n_epochs": None,
        "sample_every_n_steps": None,
        "sample_at_first": False,
        "log_with": "none",
        "resume": None,
        "output_dir": str(output_dir),
    }
    if config.cache_latents_to_disk:
        changes.update(cache_latents=True, cache_latents_to_disk=False)
    if config.cache_text_encoder_outputs_to_disk:
        changes.update(cache_text_encoder_outputs=True, cache_text_encoder_outputs_to_disk=False)
    for name, value in changes.items():
        config.set(name, value, "lr-find")


def find_lr(
    config: TrainConfig, steps: int = 200, optimizer: str = "DAdaptation", quiet: bool = False
) -> LrSuggestion:
    """Train `steps` steps with `optimizer` and return the step size it settled on. The run
    happens in a temporary folder; the one file written is the plot, `RunFolder.lr_find_plot`
    of the config's output folder."""
    plot_path = RunFolder(Path(config.output_dir), config.output_name).lr_find_plot
    seen_steps: list[int] = []
    seen: list[float] = []
    losses: list[float] = []
    progress = tqdm(total=steps, desc="lr-find", dynamic_ncols=True, disable=quiet)

    def record(step, loss, lrs):
        seen_steps.append(step)
        seen.append(lrs[0])
        losses.append(loss)
        progress.update(1)
        progress.set_postfix(loss=f"{loss:.4f}", step_size=f"{lrs[0]:.2e}")

    collapsed = None
    with tempfile.TemporaryDirectory(prefix="lorakit-lr-find-") as scratch:
        finder_config(config, steps, optimizer, Path(scratch))
        try:
            train(config, quiet=True, on_step=record, save_files=False)
        except TrainingCollapsed:
            collapsed = f"the loss became NaN or infinite at step {len(losses) + 1}"
        finally:
            progress.close()
    plot = _plot(seen_steps, seen, plot_path)
    settled = settled_value(seen) if seen else math.nan
    return LrSuggestion(seen_steps, seen, settled, plot, losses, collapsed or divergence(losses))


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
