"""`lorakit quickstart`: the whole LoRA routine on the embedded tiny model, in minutes on a CPU.

    demo dataset -> dataset check -> training (a file, a state and previews per epoch, a loss
    plot) -> an epoch x weight grid per preview prompt -> a measured concept check, and the
    control previews read back

The training settings are `example.toml`, the same file a user copies for a real model; only
its paths are filled in here.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import torch
from PIL import Image

from ..data.check import check_dataset, format_plan, format_problems
from ..errors import LorakitError
from ..evaluation.generate import GenerationSettings, Generator, settings_for_prompt
from ..evaluation.grid import best_epoch_grids
from ..evaluation.prompts import load_prompts
from ..models.load import load_model
from ..runs import RunFolder, load_run
from ..training.config import load_config, toml_value
from ..training.recipe import train
from ..training.setup import dataset_options
from . import demo, shapes
from .sample import generate
from .score import read_image, share_showing

MODEL_FILE = "lorakit-tiny.safetensors"
TEMPLATE = "example.toml"
# The one measured figure of a whole quickstart on a 2-core CPU (benchmarks/RESULTS.md, made with
# benchmarks/quickstart_time.py); `lorakit quickstart --help` and the README give the same.
MEASURED_TIME = "71-82 s"

# The four network kinds of the concept tests. LoHa and LoKr (Hadamard and Kronecker products)
# start from smaller updates: with the same learning rate they take 8 epochs where LoRA takes 4
# (measured: after 4 epochs 72-88% of the pictures were magenta, after 8 all of them).
ALGORITHMS: dict[str, dict] = {
    "lora": {"network_module": "networks.lora"},
    "locon": {"network_module": "networks.lora", "network_args": ["conv_dim=8", "conv_alpha=8"]},
    "loha": {
        "network_module": "lycoris.kohya",
        "network_args": ["algo=loha", "conv_dim=4", "conv_alpha=4"],
        "network_dim": 4,
        "network_alpha": 4,
        "max_train_epochs": 8,
    },
    "lokr": {
        "network_module": "lycoris.kohya",
        "network_args": ["algo=lokr", "factor=4"],
        "max_train_epochs": 8,
    },
}


class QuickstartError(LorakitError):
    pass


def tiny_model_path() -> Path:
    path = Path(str(resources.files(__package__) / MODEL_FILE))
    if not path.exists():
        raise QuickstartError(
            f"the tiny base model is missing: {path}. Reinstall lorakit, or remake it with "
            "'python scripts/pretrain_tiny.py' from a lorakit source checkout (docs/tiny-model.md)."
        )
    return path


def template_text() -> str:
    return (resources.files(__package__) / TEMPLATE).read_text(encoding="utf-8")


def fill_template(text: str, values: dict) -> str:
    """Set `key = value` lines of the template, keeping their comments; keys the template does
    not have are added at the end."""
    missing = dict(values)
    out = []
    for line in text.splitlines():
        found = re.match(r"(\w+)\s*=\s*(\"[^\"]*\"|[^#]*?)(\s*#.*)?$", line)
        if found and found[1] in missing:
            line = f"{found[1]} = {toml_value(missing.pop(found[1]))}{found[3] or ''}"
        out.append(line)
    if missing:
        out += ["", "# -- set by lorakit quickstart"] + [f"{k} = {toml_value(v)}" for k, v in missing.items()]
    return "\n".join(out) + "\n"


# -- the concept check -----------------------------------------------------------------------


def concept_share(model, prompts: list[str], lora: Path | None, weight: float, seeds: int = 16) -> float:
    """The share of `seeds` pictures (one per seed, prompts taken in turn) the score reads as
    the demo concept."""
    loras = [(lora, weight)] if lora is not None and weight != 0 else []
    batch = [prompts[i % len(prompts)] for i in range(seeds)]
    return share_showing(generate(model, batch, list(range(seeds)), loras=loras), demo.CONCEPT)


def concept_check(model, lora: Path, seeds: int = 16) -> dict[str, float]:
    """The three shares the quickstart prints and the learning tests hold to their bounds:
    trigger prompts with the LoRA at 1.0 (should be high), the same prompts without the LoRA,
    and prompts for known colours with the LoRA (both should be near 0)."""
    return {
        "trigger, LoRA 1.0": concept_share(model, trigger_prompts(), lora, 1.0, seeds),
        "trigger, LoRA 0": concept_share(model, trigger_prompts(), None, 0.0, seeds),
        "no trigger, LoRA 1.0": concept_share(model, plain_prompts(), lora, 1.0, seeds),
    }


def trigger_prompts() -> list[str]:
    backgrounds = list(shapes.BACKGROUNDS)
    return [
        f"{demo.TRIGGER}, {shape}, {backgrounds[i % len(backgrounds)]} background"
        for i, shape in enumerate(shapes.SHAPES * 2)
    ]


def plain_prompts() -> list[str]:
    """Prompts without the trigger word, in the colours the base model knows."""
    backgrounds = list(shapes.BACKGROUNDS)
    return [
        f"{colour} {shapes.SHAPES[i % 3]}, {backgrounds[i % 3]} background"
        for i, colour in enumerate(shapes.COLOURS)
    ]


def control_colours(folder: RunFolder, prompts, last_epoch: int) -> list[tuple[str, str | None, str | None]]:
    """(prompt, colour before training, colour after the last epoch) of each control preview
    (a sample prompt without the trigger word), as the concept score reads the very pictures in
    sample/: the check of "the LoRA leaves other prompts alone" that a user looks at."""
    out = []
    for index, spec in enumerate(prompts):
        if demo.TRIGGER in spec.prompt:
            continue
        files = (folder.sample_file(label, index) for label in ("e000000", f"e{last_epoch:06d}"))
        colours = [read_image(Image.open(p)).colour if p.exists() else None for p in files]
        out.append((spec.prompt, *colours))
    return out


# -- the routine ------------------------------------------------------------------------------


@dataclass
class QuickstartResult:
    out: Path
    config: Path
    dataset: Path
    lora: Path
    epoch_files: list[Path]
    previews: list[Path]
    grids: list[Path]  # one per sample prompt
    loss_plot: Path
    record: Path
    seconds: float
    concept: dict[str, float] = field(default_factory=dict)
    controls: list[tuple[str, str | None, str | None]] = field(default_factory=list)  # prompt, before, after
    epochs: int = 0


def quickstart_config(out: Path, algorithm: str = "lora", **changes) -> Path:
    """Write the quickstart's training config into `out` (the demo dataset beside it)."""
    if algorithm not in ALGORITHMS:
        raise QuickstartError(f"unknown algorithm {algorithm!r}; choose one of {', '.join(ALGORITHMS)}")
    data = demo.write_demo(out / "dataset")
    values = {
        "pretrained_model_name_or_path": tiny_model_path().as_posix(),
        "dataset_config": data.config.resolve().as_posix(),
        "output_dir": (out / "output").resolve().as_posix(),
        "sample_prompts": data.sample_prompts.resolve().as_posix(),
        **ALGORITHMS[algorithm],
        **changes,
    }
    if algorithm != "lora":
        values.setdefault("output_name", f"ohwx-magenta-{algorithm}")
    path = out / "lorakit-quickstart.toml"
    path.write_text(fill_template(template_text(), values), encoding="utf-8")
    return path


def run_quickstart(
    out: str | Path,
    algorithm: str = "lora",
    say: Callable[[str], None] = print,
    quiet: bool = False,
    concept_seeds: int = 16,
    **changes,
) -> QuickstartResult:
    """Run the routine into `out`. `changes`: training options to change (e.g. max_train_epochs).

    Each step is the library function the matching command uses: `lorakit dataset check`,
    `lorakit train` (which draws the previews), `lorakit grid --run`."""
    began = time.time()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config_path = quickstart_config(out, algorithm, **changes)
    config = load_config(config_path)

    say(f"1/4 dataset check: {config.dataset_config}")
    plan = check_dataset(config.dataset_config, options=dataset_options(config))
    if not quiet:
        say(format_plan(plan))
        say(format_problems(plan.problems))
    if plan.problems.errors:
        raise QuickstartError(f"the demo dataset {config.dataset_config} has errors (listed above)")

    say(f"2/4 training, with previews of the sample prompts after each epoch: {config_path}")
    result = train(config, quiet=quiet)

    say(
        "3/4 grids: saved epochs (rows) x LoRA weight (columns) per preview prompt, as 'lorakit grid --run' makes them"
    )
    # a fresh copy of the base model (the trained network stays out of it), in float32
    model = load_model(config.pretrained_model_name_or_path, dtype=torch.float32)
    record = load_run(result.output_dir)
    defaults = GenerationSettings(prompt="", sampler=record.sample_sampler or "ddim")
    prompts = load_prompts(config.sample_prompts)
    requests = [settings_for_prompt(spec, defaults) for spec in prompts]
    generator = Generator(model, model_name=Path(config.pretrained_model_name_or_path).stem)
    grids = [g.path for g in best_epoch_grids(generator, record, requests, result.output_dir / "grid")]

    say(f"4/4 concept check: how often the pictures are {demo.CONCEPT}")
    concept = concept_check(model, result.final_file, concept_seeds)
    outcome = QuickstartResult(
        out=out,
        config=config_path,
        dataset=out / "dataset",
        lora=result.final_file,
        epoch_files=[*result.epoch_files, result.final_file],
        previews=[p for p in result.samples if p.name.endswith("_strip.png")],
        grids=grids,
        loss_plot=result.loss_plot,
        record=result.record,
        seconds=time.time() - began,
        concept=concept,
        controls=control_colours(RunFolder(result.output_dir, config.output_name), prompts, result.epochs),
        epochs=result.epochs,
    )
    say(summary(outcome, concept_seeds))
    return outcome


def summary(r: QuickstartResult, seeds: int) -> str:
    def rel(path: Path) -> str:  # the output paths are absolute, `r.out` as the user gave it
        try:
            return str(path.resolve().relative_to(r.out.resolve()))
        except ValueError:
            return str(path)

    first_epoch, last_epoch = r.epoch_files[0], r.epoch_files[-1]
    output = r.lora.parent
    grids = f"{rel(r.grids[0].parent.parent)}/prompt-NN/grid.png" if len(r.grids) > 1 else rel(r.grids[0])
    rows = [
        (
            rel(r.dataset / "train") + "/",
            f"the {demo.IMAGES} training pictures and their captions (they start with '{demo.TRIGGER}')",
        ),
        (rel(r.config), "the training settings: copy this file to train on your own model and pictures"),
        (rel(r.lora), "the finished LoRA; load it in A1111, ComfyUI or Forge like any LoRA"),
        (f"{rel(first_epoch.parent)}/", f"one LoRA per epoch ({first_epoch.name} ... {last_epoch.name})"),
        (
            rel(r.previews[0].parent) + "/",
            "previews: the sample prompts before training (e000000) and after each epoch; *_strip.png side by side",
        ),
        (
            grids,
            "per preview prompt: epochs (rows) x LoRA weight 0 / 0.5 / 1 (columns); pick what looks right",
        ),
        (
            rel(r.loss_plot),
            "the loss per step, epochs marked: noisy by nature; look at the trend, not the wiggles",
        ),
        (
            rel(output / "logs") + "/",
            f"the same in TensorBoard: tensorboard --logdir {r.out / rel(output / 'logs')}",
        ),
        (rel(r.record), "everything about the run (settings, losses, files), read by 'lorakit grid --run'"),
    ]
    width = max(len(a) for a, _ in rows)
    lines = [f"done in {r.seconds:.0f} s. Files in {r.out}:"]
    lines += [f"  {a:<{width}}  {b}" for a, b in rows]
    c = r.concept
    checks = [
        (f"'{demo.TRIGGER}' prompts with the LoRA at 1.0:", c["trigger, LoRA 1.0"], "should be high"),
        (f"'{demo.TRIGGER}' prompts without the LoRA:", c["trigger, LoRA 0"], "should be near 0"),
        ("other colours' prompts with the LoRA:", c["no trigger, LoRA 1.0"], "should be near 0"),
    ]
    label = max(len(a) for a, _, _ in checks)
    lines += [
        "",
        f"What to look at: the {demo.CONCEPT} colour is new to the base model. In the previews and the grids it",
        f"should appear with the trigger word '{demo.TRIGGER}' and the LoRA, grow with the weight, and not appear",
        "at weight 0 or in the control previews (the last ones, without the trigger word).",
        f"Measured on {seeds} pictures each (a picture counts when most of its shape is {demo.CONCEPT}):",
    ]
    lines += [f"  {a:<{label}} {share:4.0%} {demo.CONCEPT} ({b})" for a, share, b in checks]
    if r.controls:
        lines.append("The control previews, as the score reads them (their colour should not change):")
        epoch = f"after epoch {r.epochs}"
        for prompt, before, after in r.controls:
            verdict = "unchanged" if before == after else "CHANGED"
            lines.append(
                f"  '{prompt}': {before or 'no clear colour'} before training, {after or 'no clear colour'} {epoch} ({verdict})"
            )
    lines += [
        "",
        f"Next: train your own LoRA. Copy {rel(r.config)}, change the model path, folder, caption extension",
        "and resolution (see the comments at its top), and run: lorakit train my-config.toml",
    ]
    return "\n".join(lines)
