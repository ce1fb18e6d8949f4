"""`lorakit quickstart [--out DIR]`: the whole routine on the embedded tiny model, in minutes."""

from __future__ import annotations

import argparse

from .common import add_command


def register(sub) -> None:
    from ..quickstart.run import ALGORITHMS, MEASURED_TIME

    p = add_command(
        sub,
        "quickstart",
        help=f"Try the whole routine on any computer ({MEASURED_TIME} on a 2-core CPU): a small built-in model "
        "learns a new colour.",
        description="Train a LoRA end to end on the small model that comes with lorakit (no download, no GPU): "
        "make a demo dataset of 10 pictures, check it, train, save a LoRA per epoch, draw previews and an "
        "epoch x weight grid per preview prompt, plot the loss, and measure whether the LoRA learned the new "
        f"colour; {MEASURED_TIME} on a 2-core CPU (measured, benchmarks/RESULTS.md). At the end it "
        "prints where each file is and what to look at. The training settings file it writes is the template "
        "for your own LoRA on a real model.",
    )
    p.add_argument(
        "--out",
        default="lorakit-quickstart",
        metavar="DIR",
        help="Folder for the dataset, settings and results (made if missing). Default: ./lorakit-quickstart",
    )
    p.add_argument(
        "--algo",
        choices=list(ALGORITHMS),
        default="lora",
        help="Kind of network to train: lora (the usual), locon (also the convolution layers), "
        "loha or lokr (LyCORIS kinds). Default: lora.",
    )
    p.add_argument("--quiet", action="store_true", help="Print only the steps and the final summary.")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..quickstart.run import run_quickstart

    run_quickstart(args.out, algorithm=args.algo, quiet=args.quiet)
    return 0
