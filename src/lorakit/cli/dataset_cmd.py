"""`lorakit dataset check DIR|CONFIG`: what the training will see, and every problem, before training."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .common import add_actions, add_command


def add_dataset_options(p: argparse.ArgumentParser) -> None:
    """The sd-scripts dataset options of the command line (same names as in sd-scripts)."""
    g = p.add_argument_group("dataset options (a dataset config file's own values win over these)")
    g.add_argument(
        "--resolution", metavar="SIZE", help="Training size: 512, or width,height like 768,512. Default: 512."
    )
    g.add_argument("--train_batch_size", type=int, metavar="N", help="Images per training step. Default: 1.")
    g.add_argument(
        "--caption_extension",
        metavar="EXT",
        help="Extension of the caption files, like .txt. Default: .caption (as in sd-scripts).",
    )
    g.add_argument(
        "--ignore_other_captions",
        action="store_true",
        default=None,
        help="Images without a caption file of that extension use their class tokens even when a caption "
        "with another extension (.txt, .caption, .tags) lies beside them (otherwise an error).",
    )
    g.add_argument("--enable_bucket", action="store_true", default=None, help="Group images by aspect ratio.")
    g.add_argument("--min_bucket_reso", type=int, metavar="N", help="Smallest bucket side. Default: 256.")
    g.add_argument("--max_bucket_reso", type=int, metavar="N", help="Largest bucket side. Default: 1024.")
    g.add_argument(
        "--bucket_reso_steps", type=int, metavar="N", help="Bucket sides are multiples of this. Default: 64."
    )
    g.add_argument(
        "--bucket_no_upscale",
        action="store_true",
        default=None,
        help="Never enlarge images; buckets follow each image.",
    )
    g.add_argument(
        "--shuffle_caption", action="store_true", default=None, help="Shuffle the tags of each caption."
    )
    g.add_argument(
        "--keep_tokens", type=int, metavar="N", help="Number of first tags that are never shuffled."
    )
    g.add_argument("--flip_aug", action="store_true", default=None, help="Random horizontal flips.")
    g.add_argument("--alpha_mask", action="store_true", default=None, help="Use transparency as a loss mask.")


OPTION_NAMES = {
    "resolution": "resolution",
    "train_batch_size": "batch_size",
    "caption_extension": "caption_extension",
    "ignore_other_captions": "ignore_other_captions",
    "enable_bucket": "enable_bucket",
    "min_bucket_reso": "min_bucket_reso",
    "max_bucket_reso": "max_bucket_reso",
    "bucket_reso_steps": "bucket_reso_steps",
    "bucket_no_upscale": "bucket_no_upscale",
    "shuffle_caption": "shuffle_caption",
    "keep_tokens": "keep_tokens",
    "flip_aug": "flip_aug",
    "alpha_mask": "alpha_mask",
}


def dataset_options(args: argparse.Namespace) -> dict:
    """The options that were given, under their dataset config names."""
    return {
        key: getattr(args, arg) for arg, key in OPTION_NAMES.items() if getattr(args, arg, None) is not None
    }


def register(sub) -> None:
    p = add_command(
        sub,
        "dataset",
        help="Check a dataset before training: images, captions, buckets, steps, problems.",
        description="Work with training datasets: kohya-style folders (10_name) or sd-scripts dataset config files.",
    )
    dsub = add_actions(p, "dataset_command")
    c = add_command(
        dsub,
        "check",
        help="Show what training will use, and every problem with its file.",
        description="Read a train folder (with folders like 10_name inside) or a dataset config (.toml), "
        "open every image and caption, and print per subset: images, repeats, captions found or missing, "
        "the most used tags, the buckets and the steps per epoch. Every problem is listed with its file "
        "and what to do. Nothing is written. Exit code 1 when there are errors.",
    )
    c.add_argument(
        "path", help="A train folder (its subfolders are like 10_name) or a dataset config .toml file."
    )
    c.add_argument(
        "--reg_data_dir", metavar="DIR", help="Folder of regularization images (subfolders like 1_dog)."
    )
    add_dataset_options(c)
    c.add_argument("--verbose", action="store_true", help="Also list notes (conversions, skipped files).")
    c.add_argument("--json", action="store_true", help="Print the report as JSON.")
    c.set_defaults(run=run_check)
    p.set_defaults(run=lambda args: (p.print_help(), 1)[1])


def run_check(args: argparse.Namespace) -> int:
    from ..data.check import check_dataset, format_plan, format_problems

    plan = check_dataset(Path(args.path), args.reg_data_dir, dataset_options(args))
    if args.json:
        print(json.dumps(plan.to_dict(), indent=2, ensure_ascii=False))
    else:
        if plan.datasets:
            print(format_plan(plan))
            print()
        print(format_problems(plan.problems, verbose=args.verbose))
    return 1 if plan.problems.errors else 0
