"""`lorakit resize LORA --new-rank R --out FILE`: a smaller LoRA with the same strength."""

from __future__ import annotations

import argparse

from .common import add_command, add_device_option

DESCRIPTION = """\
Make a LoRA smaller (for example rank 128 -> 32) while keeping as much of what it learned as
that rank can hold. Each module is decomposed by SVD and cut to the new rank; alpha is
adjusted so the strength stays the same. Any algorithm is accepted (LoHa, LoKr, LoCon, DoRA);
the result is a LoRA/LoCon. For every module the report shows the chosen rank and how much
of the module's change is kept (the fraction of its Frobenius norm: 100% = nothing lost).

--dynamic lets each module choose its own rank (at most --new-rank):
  sv_ratio       keep singular values larger than the largest divided by P (e.g. P=20)
  sv_fro         keep the fewest that hold fraction P of the Frobenius norm (e.g. P=0.9)
  sv_cumulative  keep the fewest that hold fraction P of the sum of singular values

Example: lorakit resize big.safetensors --new-rank 32 --out small.safetensors
"""


def register(sub) -> None:
    p = add_command(
        sub,
        "resize",
        help="Lower a LoRA's rank (e.g. 128 -> 32) by SVD, keeping its strength.",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("lora", help="The LoRA file to resize.")
    p.add_argument(
        "--out", required=True, metavar="FILE", help="Where to write the resized LoRA (.safetensors)."
    )
    p.add_argument(
        "--new-rank",
        "--new_rank",
        type=int,
        required=True,
        metavar="R",
        help="The new rank of Linear and 1x1 layers; with --dynamic, the highest rank a module may get.",
    )
    p.add_argument(
        "--new-conv-rank",
        "--new_conv_rank",
        type=int,
        metavar="R",
        help="The new rank of 3x3 convolution layers (LoCon). Default: the same as --new-rank.",
    )
    p.add_argument(
        "--dynamic",
        "--dynamic_method",
        choices=["sv_ratio", "sv_fro", "sv_cumulative"],
        help="Let each module choose its rank by this rule (see above), up to --new-rank.",
    )
    p.add_argument(
        "--dynamic-param",
        "--dynamic_param",
        type=float,
        metavar="P",
        help="The value P of the --dynamic rule: a ratio of at least 1 for sv_ratio, a fraction between 0 and 1 "
        "for sv_fro and sv_cumulative.",
    )
    p.add_argument(
        "--precision",
        choices=["fp16", "bf16", "fp32", "float"],
        help="Stored precision of the result. Default: the precision of the input file.",
    )
    add_device_option(p, "compute the SVD")
    p.add_argument("--quiet", action="store_true", help="Print only the summary, not one line per module.")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..tools.resize import resize_lora

    report = resize_lora(
        args.lora,
        args.out,
        args.new_rank,
        new_conv_rank=args.new_conv_rank,
        dynamic=args.dynamic,
        dynamic_param=args.dynamic_param,
        precision=args.precision,
        device=args.device,
        progress=True,
    )
    print(report.format(per_module=not args.quiet))
    print(f"wrote {report.output}")
    return 0
