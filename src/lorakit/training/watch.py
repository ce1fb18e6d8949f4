"""Watching a run: collapse detection, TensorBoard scalars and the loss plot."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import LorakitError
from ..utils.files import atomic_path

COLLAPSE_ADVICE = (
    "What to try: a lower learning rate (or unet_lr/text_encoder_lr), a smaller network_alpha, "
    'bf16 instead of fp16 (mixed_precision = "bf16"), and no_half_vae = true for SDXL.'
)


class TrainingCollapsed(LorakitError):
    """The loss became NaN or infinite, or ran away: the run is ruined ("炸炉") and was stopped."""


@dataclass
class CollapseGuard:
    """Watches the loss of every step. Stops the run at once on a NaN/inf loss, and when the loss
    runs away before it becomes NaN: the smoothed loss above `factor` times its start for
    `patience` steps, `spikes` steps in a row above `spike` times it, or one step above `jump`
    times it. The start is the untrained
    model's loss at fixed timesteps (`reference`, measured before the first step), or else the
    mean of the first `warmup` steps; healthy runs stay within a few times it. A saved file
    counts as good only once a later step, computed with its weights, passed these checks (or
    the run ended healthy)."""

    factor: float = 5.0
    jump: float = 100.0
    spike: float = 20.0
    spikes: int = 3
    warmup: int = 20
    patience: int = 10
    smoothing: float = 0.9
    reference: float | None = None
    first: list[float] = field(default_factory=list)
    ema: float | None = None
    above: int = 0
    spiking: int = 0
    pending: str | None = None  # saved, not yet confirmed by a healthy step
    good: str | None = None  # the newest confirmed file

    @property
    def start(self) -> float | None:
        if self.reference is not None:
            return self.reference
        return sum(self.first) / len(self.first) if len(self.first) >= self.warmup else None

    def healthy(self) -> bool:
        """Is the run healthy now (a file saved now may become good)?"""
        start = self.start
        return start is None or self.ema is None or self.ema <= self.factor * start

    def saved(self, path: str) -> None:
        self.pending = path

    def finished(self) -> None:
        """The run ended: a file saved at the last step is good if the run was healthy then."""
        if self.pending and self.healthy():
            self.good, self.pending = self.pending, None

    def check(self, loss: float, step: int) -> None:
        """Raises TrainingCollapsed when the run is ruined; else confirms the pending file."""
        if not math.isfinite(loss):
            self.stop(f"the loss became {loss} at step {step}")
        if len(self.first) < self.warmup:
            self.first.append(loss)
        self.ema = loss if self.ema is None else self.smoothing * self.ema + (1 - self.smoothing) * loss
        start = self.start
        if start is not None:
            if loss > self.jump * start:
                self.stop(
                    f"the loss jumped to {loss:.4g} at step {step}, {loss / start:.0f}x its start ({start:.4g})"
                )
            self.spiking = self.spiking + 1 if loss > self.spike * start else 0
            if self.spiking >= self.spikes:
                self.stop(
                    f"the loss ran away: {self.spikes} steps in a row above {self.spike:g}x its start ({start:.4g}), "
                    f"{loss:.4g} at step {step}"
                )
            self.above = self.above + 1 if self.ema > self.factor * start else 0
            if self.above >= self.patience:
                self.stop(
                    f"the loss ran away: smoothed {self.ema:.4g} at step {step}, above {self.factor:g}x its start "
                    f"({start:.4g}) for {self.patience} steps"
                )
        if self.pending and self.healthy() and not self.spiking:
            self.good, self.pending = self.pending, None

    def stop(self, what: str) -> None:
        kept = f"The last good LoRA is {self.good}." if self.good else "No good LoRA had been saved yet."
        if self.pending:
            kept += f" {self.pending} was saved after it, when the run was already failing: do not use it."
        raise TrainingCollapsed(f"{what}; training stopped. {kept} {COLLAPSE_ADVICE}")

    def state_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items()}

    def load_state_dict(self, state: dict) -> None:
        known = set(self.__dict__)
        self.__dict__.update({k: v for k, v in state.items() if k in known})


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
