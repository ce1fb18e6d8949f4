"""`lorakit convert IN OUT`: single file <-> diffusers folder, and precision changes."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import add_command, add_v_parameterization


def register(sub) -> None:
    p = add_command(
        sub,
        "convert",
        help="Convert a checkpoint between single-file (A1111) and diffusers layouts, or change precision.",
        description="Convert a checkpoint between the single-file layout A1111 and ComfyUI use and a "
        "diffusers folder, optionally changing the stored precision. The output is written atomically: "
        "an interrupted run never leaves a half-written model.",
    )
    p.add_argument("input", help="A .safetensors/.ckpt checkpoint or a diffusers folder.")
    p.add_argument("output", help="Output file (.safetensors) or folder (for --to diffusers).")
    p.add_argument(
        "--to",
        choices=["single-file", "diffusers"],
        help="Output layout. Default: diffusers if OUTPUT has no .safetensors suffix, else single-file.",
    )
    p.add_argument(
        "--precision",
        choices=["fp16", "bf16", "fp32"],
        help="Stored precision of the output. fp16 halves the size and is what most shared models use; "
        "bf16 is as small with a wider range. Default: keep the input's precision.",
    )
    p.add_argument("--vae", help="A VAE file to bake into the output instead of the model's own VAE.")
    add_v_parameterization(p, "Mark")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..models.load import load_model
    from ..models.save import save_diffusers, save_single_file
    from ..utils.files import refuse_input

    output = Path(args.output)
    layout = args.to or ("single-file" if output.suffix.lower() == ".safetensors" else "diffusers")
    if layout == "single-file" and output.suffix.lower() != ".safetensors":
        output = output.with_suffix(".safetensors")
    refuse_input(output, [args.input, args.vae])
    model = load_model(args.input, vae=args.vae, v_parameterization=args.v_parameterization)
    print(f"loaded {model.family.label} ({model.prediction_type}) from {args.input}")
    if layout == "single-file":
        save_single_file(model, output, precision=args.precision)
    else:
        save_diffusers(model, output, precision=args.precision)
    print(f"wrote {layout} model: {output}")
    return 0
