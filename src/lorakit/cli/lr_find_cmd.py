"""`lorakit lr-find CONFIG`: find a learning rate with D-Adaptation/Prodigy, as users do by hand."""

from __future__ import annotations

import argparse

from .common import add_command
from .train_cmd import add_option_flags, overrides


def register(sub) -> None:
    p = add_command(
        sub,
        "lr-find",
        help="Find a good learning rate: a short run with D-Adaptation, then suggested rates for AdamW and Lion.",
        description="Runs your training config for a few hundred steps with an optimizer that finds its own "
        "step size (D-Adaptation or Prodigy) at learning rate 1 and a constant schedule, plots the step size it "
        "settles on, and prints unet_lr / text_encoder_lr to use with AdamW (that value) and Lion (a third of it). "
        "If the loss diverges in that run, it says so and suggests nothing. The run happens in a temporary "
        "folder: the only file written is the plot, OUTPUT_DIR/OUTPUT_NAME-lr-find.png.",
        usage="lorakit lr-find CONFIG [--steps N] [--optimizer NAME] [--option VALUE ...]",
    )
    p.add_argument("config", help="Your training config (TOML).")
    p.add_argument(
        "--steps", type=int, default=200, help="Steps to run (default 200). More steps settle better."
    )
    p.add_argument(
        "--optimizer",
        default="DAdaptation",
        choices=["DAdaptation", "DAdaptAdam", "Prodigy"],
        help="The self-tuning optimizer to use (default DAdaptation, as in the usual tutorials).",
    )
    p.add_argument("--quiet", action="store_true", help="Print only the result.")
    add_option_flags(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..training.config import load_config
    from ..training.lr_find import find_lr

    config = load_config(args.config, overrides(args))
    result = find_lr(config, steps=args.steps, optimizer=args.optimizer, quiet=args.quiet)
    if result.diverged:
        print(
            f"{args.optimizer} diverged: {result.diverged}. The step size it reached "
            f"({result.dlr[-1] if result.dlr else float('nan'):.2e}) is too large for this model and data, "
            "so no learning rate is suggested."
        )
        print(
            "What to try: --optimizer Prodigy --optimizer_args d_coef=0.5 (a more cautious step size), "
            "or a smaller network_alpha; then run lr-find again."
        )
    else:
        print(
            f"{args.optimizer} settled at a step size (d x lr) of {result.settled:.2e} after {len(result.dlr)} steps."
        )
        print("Suggested settings:")
        print(f"  AdamW / AdamW8bit: unet_lr = {result.adamw:.2e}, text_encoder_lr = {result.adamw:.2e}")
        print(f"  Lion:              unet_lr = {result.lion:.2e}, text_encoder_lr = {result.lion:.2e}")
        print("Many users then lower text_encoder_lr to a half or a tenth of unet_lr.")
    if result.plot:
        print(f"plot: {result.plot}")
    return 1 if result.diverged else 0
