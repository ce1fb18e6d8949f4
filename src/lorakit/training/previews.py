"""Preview images during training, from an sd-scripts prompt file, with the network applied.

Previews use the evaluation package's generator (A1111 sampler names, prompts read as A1111
reads them: emphasis, BREAK, any length; the parameters chunk in each PNG) over the model being
trained, without casting or copying it, so a preview matches what A1111 draws from that line. Random state is saved
and restored around them, so previews never change the training run.
"""

from __future__ import annotations

import random
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..evaluation.drawing import draw_strip
from ..evaluation.generate import GenerationSettings, Generator, settings_for_prompt
from ..evaluation.prompts import load_prompts
from ..utils.files import atomic_path
from .options import ConfigOptions

PREVIEW_SEED = 1234  # prompts without --d use seed 1234 + their index, the same every epoch


def load_preview_prompts(path: str | Path):
    return load_prompts(Path(path))


@contextmanager
def kept_random_state():
    """Pictures drawn inside leave torch's, numpy's and python's random state as they were, so
    they never change the training run."""
    states = (torch.get_rng_state(), np.random.get_state(), random.getstate())
    try:
        yield
    finally:
        torch.set_rng_state(states[0])
        np.random.set_state(states[1])
        random.setstate(states[2])


def make_previews(
    model, network, prompts, config, folder: Path, name: str, label: str, caption: str = ""
) -> tuple[list[Path], list[str]]:
    """Write one PNG per prompt and a strip of all of them, each under its prompt with `caption`
    (the run and epoch) on top; return (files, warnings)."""
    was_training = network.training
    network.eval()
    folder.mkdir(parents=True, exist_ok=True)
    generator = Generator(model, device=model.unet.device, cast=False, model_name=name)
    defaults = GenerationSettings(
        prompt="", sampler=config.sample_sampler or "ddim", clip_skip=config.clip_skip or 1
    )
    files, images, warnings = [], [], []
    # half-precision parts (all of them, or all but a DreamBooth's fp32 U-Net) run under autocast
    low = [m.dtype for m in (model.unet, *model.text_encoders) if m.dtype != torch.float32]
    autocast = torch.autocast(model.unet.device.type, dtype=low[0] if low else torch.float32, enabled=bool(low))
    try:
        with kept_random_state():
            for index, spec in enumerate(prompts):
                settings = settings_for_prompt(spec, defaults)
                if spec.seed is None:
                    settings = replace(settings, seed=PREVIEW_SEED + index)
                with autocast:
                    result = generator(settings)[0]
                path = result.save(folder / f"{name}_{label}_{index:02d}.png")
                files.append(path)
                images.append(result.image)
                problem = result.problem
                if problem:
                    warnings.append(
                        f"warning: preview {path.name} is {problem}: the network may have collapsed (NaN). "
                        "Look at the loss; try a lower learning rate, smaller alpha or bf16."
                    )
    finally:
        network.train(was_training)
    if images:
        strip, _ = draw_strip(images, [spec.prompt for spec in prompts], caption)
        path = folder / f"{name}_{label}_strip.png"
        with atomic_path(path) as tmp:
            strip.save(tmp, format="PNG")
        files.append(path)
    return files, warnings


@dataclass(frozen=True)
class PreviewOptions(ConfigOptions):
    sample_prompts: str | None = None
    sample_every_n_steps: int | None = None
    sample_every_n_epochs: int | None = None
    sample_at_first: bool = False
    sample_sampler: str | None = "ddim"
    clip_skip: int | None = None


class Previews:
    """The run's previews on sd-scripts' schedule: before training (`sample_at_first`), every N
    steps (unless every N epochs is set, which wins) and every N epochs, and always after the
    last epoch when previews are on. Drawn on the main process; the others wait."""

    def __init__(self, options: PreviewOptions, model, network, folder, runtime, tensorboard, log, events):
        self.options, self.model, self.network, self.folder = options, model, network, folder
        self.runtime, self.tensorboard, self.log, self.events = runtime, tensorboard, log, events
        self.prompts = load_preview_prompts(options.sample_prompts) if options.sample_prompts else []
        self.files: list[Path] = []

    def draw(self, label: str, step: int, when: str) -> None:
        """The previews of `label` (file names); `when` ("after epoch 2") goes in the strip's caption."""
        if not self.prompts:
            self.events.warning("no previews: this run has no sample_prompts")
        elif self.runtime.is_main_process:
            caption = f"{self.folder.name}: {when}"
            files, warnings = make_previews(
                self.model, self.network, self.prompts, self.options, self.folder.samples, self.folder.name,
                label, caption,
            )  # fmt: skip
            self.files.extend(files)
            self.events.emit("sample", step=step, label=label, files=files)
            for warning in warnings:
                self.log(warning)
                self.events.warning(warning)
            self.tensorboard.image("samples", np.asarray(Image.open(files[-1]).convert("RGB")), step)
        self.runtime.wait_for_everyone()

    def at_start(self, step: int) -> None:
        if self.options.sample_at_first and step == 0:
            self.draw("e000000", 0, "before training (the base model alone)")

    def after_step(self, step: int) -> None:
        o = self.options
        if o.sample_every_n_steps and not o.sample_every_n_epochs and step % o.sample_every_n_steps == 0:
            self.draw(f"{step:06d}", step, f"after step {step}")

    def after_epoch(self, epoch: int, step: int, last: bool) -> None:
        o = self.options
        if not (o.sample_every_n_epochs or o.sample_every_n_steps):
            return
        if (o.sample_every_n_epochs and epoch % o.sample_every_n_epochs == 0) or last:
            self.draw(f"e{epoch:06d}", step, f"after epoch {epoch} (step {step})")
