"""`lorakit grid`: an A1111-style X/Y/Z plot in one command, and the best-epoch grid of a run."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import add_command
from .generate_cmd import (
    add_generation_options,
    add_model_extras,
    add_model_options,
    base_settings,
    prompt_specs,
)

AXIS_HELP = (
    "KIND=VALUES, values separated by commas. Kinds: lora (files or globs, ordered by epoch; 'none' "
    "for no LoRA), weight (one strength for text encoder and U-Net), prompt (search/replace: the first value is replaced by each), sampler, "
    "cfg, steps, seed, blocks (block-weight presets; put a vector in quotes). Ranges: '0-1 [5]', '0.2-1 (+0.2)'."
)


def register(sub) -> None:
    p = add_command(
        sub,
        "grid",
        help="Compare epochs, weights, samplers... in one labelled image (A1111 X/Y/Z plot).",
        description="Render an X/Y/Z plot: the same image varied along up to three axes, as one labelled PNG "
        "plus the single images (cells/) and grid.json. The model is loaded once and LoRA files are swapped "
        "without reloading it. With --run, it builds the epoch x weight grid of a finished training run "
        "from its own sample prompts and prints each epoch's validation loss, marking the lowest.",
    )
    p.add_argument(
        "--run",
        dest="run_dir",
        metavar="OUTPUT_DIR",
        help="A training output folder: one grid per sample prompt of its saved epochs (rows) x LoRA "
        "weights 0, 0.5, 1 (columns; 0 is the base model), using run.json there for the model, sample prompts "
        "and validation losses. --x/--y replace the weight/epoch axes.",
    )
    add_model_options(p)
    add_generation_options(p, batch=False)
    p.add_argument("--x", help="The columns. " + AXIS_HELP)
    p.add_argument("--y", help="The rows. Same form as --x.")
    p.add_argument("--z", help="One grid per value, side by side. Same form as --x.")
    p.add_argument(
        "--weight",
        type=float,
        default=1.0,
        help="LoRA weight for the lora axis when there is no weight axis (default 1).",
    )
    p.add_argument(
        "--font-size", type=int, default=None, help="Label size in pixels (default: from the image size)."
    )
    p.add_argument("--out", help="Folder for grid.png, cells/ and grid.json (with --run: RUN/grid).")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import LorakitError
    from ..evaluation.generate import BLANK_ADVICE, open_generator, settings_for_prompt
    from ..evaluation.grid import grids, parse_axis, run_axes
    from ..evaluation.prompts import load_prompts
    from ..runs import load_run, loss_table

    record = load_run(args.run_dir) if args.run_dir else None
    specs = prompt_specs(args)
    if record is not None:
        if specs is None and record.sample_prompts:
            specs = load_prompts(record.sample_prompts)
        if not args.model and record.base_model:
            args.model = str(record.base_model)
        if args.clip_skip is None and record.clip_skip:
            args.clip_skip = record.clip_skip
        if args.sampler is None and record.sample_sampler:
            args.sampler = record.sample_sampler
        if args.v_parameterization is None and record.v_parameterization is not None:
            args.v_parameterization = record.v_parameterization
    if not args.model:
        raise LorakitError("--model is required (or a run.json naming its base_model, with --run).")
    if specs is None:
        raise LorakitError("give a --prompt or --prompts (the run records no sample prompts).")
    out = Path(args.out) if args.out else (Path(args.run_dir) / "grid" if args.run_dir else None)
    if out is None:
        raise LorakitError("--out is required: the folder for the grid.")

    lora_base = Path(args.run_dir) if args.run_dir else None
    x = parse_axis(args.x, lora_base) if args.x else None
    y = parse_axis(args.y, lora_base) if args.y else None
    z = parse_axis(args.z, lora_base) if args.z else None
    suffixes = None
    if record is not None:
        weights, epochs, suffixes = run_axes(record)
        x = x or weights
        if y is None:
            y = epochs
        else:
            suffixes = None
        print(loss_table(record))
    if x is None and y is None and z is None:
        raise LorakitError("give at least one axis: --x KIND=VALUES (see --help), or --run OUTPUT_DIR.")

    defaults = base_settings(args)
    lora_dir = args.lora_dir or lora_base
    requests = [settings_for_prompt(spec, defaults, lora_dir) for spec in specs]
    generator = open_generator(args.model, args.vae, args.v_parameterization, args.device, args.precision)
    add_model_extras(generator, args)
    options = dict(default_weight=args.weight, row_label_suffixes=suffixes, font_size=args.font_size)
    for result in grids(generator, requests, x, y, z, out, **options):
        print(f"{result.path}  ({result.image.size[0]}x{result.image.size[1]}, {len(result.cells)} cells)")
        blank = [c for c in result.cells if c.image is not None and c.image.problem]
        for cell in blank:
            print(
                f"warning: cell {cell.file.name if cell.file else cell.x} is {cell.image.problem}: {BLANK_ADVICE}.",
                file=sys.stderr,
            )
    return 0
