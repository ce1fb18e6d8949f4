"""`lorakit inspect FILE`: what a model file is, before you train on it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .common import add_command, add_v_parameterization


def register(sub) -> None:
    p = add_command(
        sub,
        "inspect",
        help="Show what a model or LoRA file is: family, prediction type, sizes, hashes.",
        description="Show what a checkpoint (or diffusers folder) is: its family (SD1.x, SD2.x, SDXL), "
        "prediction type, stored precision, parameter counts per component and the hashes A1111 shows.",
    )
    p.add_argument("file", help="A .safetensors/.ckpt checkpoint or a diffusers folder.")
    add_v_parameterization(p)
    p.add_argument("--json", action="store_true", help="Print the report as JSON instead of text.")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..tools.inspect import format_inspection, inspect_file

    report = inspect_file(Path(args.file), v_parameterization=args.v_parameterization)
    print(json.dumps(report, indent=2) if args.json else format_inspection(report))
    return 0
