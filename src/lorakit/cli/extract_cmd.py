"""`lorakit extract --base A --tuned B --dim R --out FILE`: a LoRA from two checkpoints."""

from __future__ import annotations

import argparse

from .common import add_command, add_device_option

DESCRIPTION = """\
Make a LoRA that reproduces the difference between a fine-tuned checkpoint and the model it
was trained from: applying the LoRA to --base approximates --tuned. Each layer's difference is
compressed to --dim by SVD (and 3x3 convolutions to --conv-dim, which makes a LoCon). Both
checkpoints are read one layer at a time, so little memory is needed. If the text encoder was
not changed by the fine-tune, it is left out of the LoRA, and the report says so.

The SVD of every layer is the slow part: on a small CPU a full SDXL takes tens of minutes (seconds per
large layer). --device auto uses a GPU when PyTorch sees one.

Example: lorakit extract --base sd15.safetensors --tuned anime.safetensors --dim 64 --out anime-lora.safetensors
"""


def register(sub) -> None:
    p = add_command(
        sub,
        "extract",
        help="Make a LoRA from the difference between a fine-tuned checkpoint and its base.",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--base",
        "--model_org",
        required=True,
        metavar="CKPT",
        help="The original model (checkpoint file or diffusers folder).",
    )
    p.add_argument(
        "--tuned",
        "--model_tuned",
        required=True,
        metavar="CKPT",
        help="The fine-tuned model, of the same family (SD1, SD2 or SDXL) as --base.",
    )
    p.add_argument(
        "--out", "--save_to", required=True, metavar="FILE", help="Where to write the LoRA (.safetensors)."
    )
    p.add_argument(
        "--dim",
        type=int,
        required=True,
        metavar="R",
        help="The rank of the LoRA: higher keeps more of the difference and makes a bigger file (32-128 is common).",
    )
    p.add_argument(
        "--conv-dim",
        "--conv_dim",
        type=int,
        metavar="R",
        help="Also extract the 3x3 convolution layers (a LoCon) at this rank. Default: attention and text "
        "encoder layers only, like a normal LoRA.",
    )
    p.add_argument(
        "--clamp-quantile",
        "--clamp_quantile",
        type=float,
        default=0.99,
        metavar="Q",
        help="Clamp the values of the LoRA matrices to their Q quantile, removing rare extreme values that "
        "fp16 files handle badly (default 0.99, as sd-scripts; 1 turns it off).",
    )
    p.add_argument(
        "--min-diff",
        "--min_diff",
        type=float,
        default=0.01,
        metavar="D",
        help="If no text-encoder weight differs by more than D between the models, the text encoder is "
        "treated as unchanged and left out (default 0.01, as sd-scripts).",
    )
    p.add_argument(
        "--precision",
        choices=["fp16", "bf16", "fp32", "float"],
        help="Stored precision of the LoRA. Default: fp32.",
    )
    add_device_option(p, "compute the SVD")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..tools.extract import extract_lora

    report = extract_lora(
        args.base,
        args.tuned,
        args.out,
        args.dim,
        conv_dim=args.conv_dim,
        clamp_quantile=args.clamp_quantile,
        min_diff=args.min_diff,
        precision=args.precision,
        device=args.device,
        progress=True,
    )
    print(report.text_encoder_note)
    if report.fro_retained:
        mean = sum(report.fro_retained.values()) / len(report.fro_retained)
        print(
            f"{report.modules} modules; rank {args.dim} keeps {mean:.1%} of each layer's difference on average"
        )
    print(f"wrote {report.output}")
    return 0
