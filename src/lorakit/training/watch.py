"""Watching a run: collapse detection, TensorBoard scalars and the loss plot."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import LorakitError
from ..utils.files import atomic_path

COLLAPSE_ADVICE = (
    "What to try: a lower learning rate (or unet_lr/text_encoder_lr), a smaller network_alpha, "
    'bf16 instead of fp16 (mixed_precision = "bf16"), and no_half_vae = true for SDXL.'
)


class TrainingCollapsed(LorakitError):
    """The loss became NaN or infinite: the run is ruined ("炸炉") and was stopped."""


@dataclass
class CollapseGuard:
    """Stops on a NaN/inf loss at once; warns (once) when the smoothed loss keeps rising far above
    its best value, which usually means the learning rate is too high."""

    smoothing: float = 0.98
    factor: float = 3.0
    patience: int = 50
    ema: float | None = None
    best: float = math.inf
    rising: int = 0
    warned: bool = False
    seen: int = 0

    def check(self, loss: float, step: int, last_saved: str | None) -> str | None:
        if not math.isfinite(loss):
            kept = f"The last good LoRA is {last_saved}." if last_saved else "No LoRA had been saved yet."
            raise TrainingCollapsed(
                f"the loss became {loss} at step {step}; training stopped. {kept} {COLLAPSE_ADVICE}"
            )
        self.seen += 1
        self.ema = loss if self.ema is None else self.smoothing * self.ema + (1 - self.smoothing) * loss
        if self.seen < self.patience:
            return None
        self.best = min(self.best, self.ema)
        self.rising = self.rising + 1 if self.ema > self.factor * self.best else 0
        if self.rising >= self.patience and not self.warned:
            self.warned = True
            return (
                f"warning: the smoothed loss ({self.ema:.4f}) has stayed above {self.factor:g}x its best "
                f"({self.best:.4f}) for {self.patience} steps: the run may be diverging. {COLLAPSE_ADVICE}"
            )
        return None

    def state_dict(self) -> dict:
        return dict(self.__dict__)

    def load_state_dict(self, state: dict) -> None:
        self.__dict__.update(state)


def preview_problem(image: np.ndarray) -> str | None:
    """'black' / 'uniform' for a preview that shows nothing, the visible sign of a NaN run."""
    pixels = image.astype(np.float32)
    if pixels.max() < 8:
        return "black"
    if pixels.std() < 2:
        return "uniform"
    return None


def loss_figure(losses: list[tuple[int, float]], epochs: list[dict], title: str = ""):
    """The matplotlib figure of the loss per step (raw and smoothed), each epoch's end marked
    and labelled, validation loss per epoch if any, and the run's name in the title."""
    import matplotlib  # imported when a plot is drawn: it adds a second to every start otherwise

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps, values = zip(*losses)
    smooth, ema = [], None
    for v in values:
        ema = v if ema is None else 0.9 * ema + 0.1 * v
        smooth.append(ema)
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    ax.plot(steps, values, color="#9bbbe0", linewidth=0.8, label="loss per step")
    ax.plot(steps, smooth, color="#1f5fa8", linewidth=1.8, label="smoothed")
    for e in epochs:
        if e.get("step") is not None:
            ax.axvline(e["step"], color="#888888", linestyle=":", linewidth=1.0)
            ax.annotate(  # just above the plot: clear of the data and the legend
                f"epoch {e['epoch']}", (e["step"], 1.0), xycoords=("data", "axes fraction"),
                xytext=(0, 2), textcoords="offset points", ha="center", va="bottom", fontsize=8, color="#555555",
            )  # fmt: skip
    val = [(e["step"], e["validation_loss"]) for e in epochs if e.get("validation_loss") is not None]
    if val:
        ax.plot(*zip(*val), "o-", color="#d0521b", label="validation loss (per epoch)")
    ax.set_title(f"{title}: loss per step" if title else "loss per step", pad=14 if epochs else 6)
    ax.set_xlabel("step (dotted lines: end of each epoch)" if epochs else "step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def plot_losses(
    losses: list[tuple[int, float]], epochs: list[dict], path: Path, title: str = ""
) -> Path | None:
    """`loss_figure` as a PNG (None when there are no losses)."""
    if not losses:
        return None
    import matplotlib.pyplot as plt

    fig = loss_figure(losses, epochs, title)
    with atomic_path(path) as tmp:  # the title also as PNG text, for image viewers and tests
        fig.savefig(tmp, format="png", metadata={"Title": fig.axes[0].get_title()})
    plt.close(fig)
    return path


class Scalars:
    """TensorBoard scalars under sd-scripts' names (loss/current, lr/unet, ...); a no-op when off."""

    def __init__(self, log_dir: Path | None):
        self.writer = None
        if log_dir is not None:
            from torch.utils.tensorboard import SummaryWriter  # slow to import; only when logging

            self.writer = SummaryWriter(str(log_dir))

    def log(self, values: dict[str, float], step: int) -> None:
        if self.writer:
            for key, value in values.items():
                self.writer.add_scalar(key, value, step)

    def image(self, tag: str, image: np.ndarray, step: int) -> None:
        if self.writer:
            self.writer.add_image(tag, image, step, dataformats="HWC")

    def close(self) -> None:
        if self.writer:
            self.writer.close()
