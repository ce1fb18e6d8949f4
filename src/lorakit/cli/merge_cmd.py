"""`lorakit merge`: LoRAs into a checkpoint (streamed), or LoRAs into one LoRA."""

from __future__ import annotations

import argparse

from .common import add_command, add_device_option

DESCRIPTION = """\
Two jobs, chosen by --model:

WITH --model: bake LoRAs into the checkpoint and write a new checkpoint. Any algorithm works
(LoRA, LoCon, LoHa, LoKr, DoRA: the full change each one makes), with block weights. A
.safetensors checkpoint is read and written one tensor at a time, so even SDXL needs only a
few GB of memory. The result equals the base model with the LoRAs applied at those weights.

WITHOUT --model: combine LoRAs into one LoRA file, in one of three ways:

  (default) the same-rank merge of sd-scripts (merge_lora.py). The two small matrices of
  each LoRA (up and down) are added, each multiplied by sqrt(alpha/alpha_first) x WEIGHT.
  Careful: because the weight multiplies BOTH matrices, and the LoRA's effect is their
  product, a LoRA merged alone at 0.5 comes out at 0.5 x 0.5 = 0.25 of its strength
  (the weight is squared), and two LoRAs also mix into cross terms (A's up matrix times
  B's down matrix), so the result is not simply A plus B. Giving sqrt(WEIGHT) instead
  fixes the first effect; --same-to-strength does that for you (SuperMerger's "same to
  strength" option). All files must have the same rank.

  --concat: puts the matrices side by side (rank = sum of the ranks). The result is
  exactly WEIGHT_A x A + WEIGHT_B x B. Ranks may differ. (sd-scripts' --concat keeps the
  first file's alpha, which weakens the result; lorakit adjusts alpha so it does not.)

  --new-rank R: adds the full changes of all files (any algorithm: LoHa, LoKr, LoCon...)
  with their weights, then compresses the sum to rank R with an SVD, as sd-scripts'
  svd_merge_lora.py does. Exact when R is large enough, the best rank-R approximation
  otherwise.

In both jobs the output records what was merged with which weights (modelspec.merged_from).

Examples:
  lorakit merge --model base.safetensors --lora style.safetensors:0.8 --out merged.safetensors
  lorakit merge --model sdxl.safetensors --lora a.safetensors:1:1,0,0,0,0,1,1,1,1,1,1,1 --out m.safetensors
  lorakit merge --lora a.safetensors:0.6 --lora b.safetensors:0.4 --new-rank 32 --out ab.safetensors
"""

LORA_HELP = (
    "A LoRA file to merge, as FILE[:WEIGHT[:BLOCKS]]; repeat for several. WEIGHT is the strength "
    "(default 1; negative subtracts). BLOCKS is an optional A1111 LoRA Block Weight vector (17 or 26 "
    "comma-separated values for SD1/SD2, 12 or 20 for SDXL, text encoder first) or a preset name "
    "such as OUTALL. Example: style.safetensors:0.8:1,0,0,0,0,0,0,0,1,1,1,1,1,1,1,1,1"
)


def register(sub) -> None:
    p = add_command(
        sub,
        "merge",
        help="Merge LoRAs into a checkpoint (in little memory), or several LoRAs into one.",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--lora", action="append", required=True, metavar="FILE[:WEIGHT[:BLOCKS]]", help=LORA_HELP)
    p.add_argument(
        "--out",
        required=True,
        metavar="PATH",
        help="Where to write the result: a .safetensors file (a folder with --to diffusers). It must not be the "
        "input model; an existing file there is replaced only once the new one is complete.",
    )
    p.add_argument(
        "--model",
        metavar="CKPT",
        help="The checkpoint (.safetensors/.ckpt file or diffusers folder) to bake the LoRAs into. "
        "Leave it out to merge the LoRAs into one LoRA.",
    )
    p.add_argument(
        "--to",
        choices=["single-file", "diffusers"],
        help="With --model: output layout. single-file is what A1111 and ComfyUI load; diffusers writes a "
        "folder (the merge then happens in memory). Default: single-file if --out ends in .safetensors.",
    )
    p.add_argument(
        "--precision",
        choices=["fp16", "bf16", "fp32", "float"],
        help="Stored precision of the output. fp16 is what most shared files use (half the size of fp32). "
        "Default: the precision of the input model (with --model) or of the first LoRA.",
    )
    p.add_argument(
        "--concat",
        action="store_true",
        help="LoRAs into one: stack the matrices (rank = sum of ranks); exact, ranks may differ.",
    )
    p.add_argument(
        "--new-rank",
        "--new_rank",
        type=int,
        metavar="R",
        help="LoRAs into one: add the full changes of all files, then compress to rank R by SVD. Works for any "
        "algorithm and any ranks. A module whose merged change needs fewer than R dimensions keeps that lower "
        "rank (nothing is lost).",
    )
    p.add_argument(
        "--new-conv-rank",
        "--new_conv_rank",
        type=int,
        metavar="R",
        help="With --new-rank: the rank of 3x3 convolution layers (LoCon). Default: the same as --new-rank.",
    )
    p.add_argument(
        "--same-to-strength",
        action="store_true",
        help="For the default same-rank merge: use sqrt(WEIGHT) on each matrix, so a LoRA keeps WEIGHT as its "
        "strength instead of WEIGHT squared (see the explanation above).",
    )
    p.add_argument(
        "--clamp-quantile",
        "--clamp_quantile",
        type=float,
        metavar="Q",
        help="With --new-rank: clamp the values of the new matrices to their Q quantile (sd-scripts uses 0.99), "
        "which removes rare extreme values. Default: no clamping (the exact SVD result).",
    )
    add_device_option(p, "compute")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import LorakitError
    from ..tools import merge_into_checkpoint, merge_loras, parse_lora_spec

    specs = [parse_lora_spec(text) for text in args.lora]
    if args.model:
        for flag, value in (
            ("--concat", args.concat),
            ("--new-rank", args.new_rank),
            ("--new-conv-rank", args.new_conv_rank),
            ("--same-to-strength", args.same_to_strength),
            ("--clamp-quantile", args.clamp_quantile),
        ):
            if value:
                raise LorakitError(f"{flag} is for merging LoRAs into one LoRA; leave out --model for that.")
        report = merge_into_checkpoint(
            args.model,
            specs,
            args.out,
            precision=args.precision,
            to=args.to,
            device=args.device,
            progress=True,
        )
        for label, merged, zeroed in report.loras:
            extra = f" ({zeroed} left out by block weight 0)" if zeroed else ""
            print(f"merged {label}: {merged} modules{extra}")
        how = "streamed tensor by tensor" if report.streamed else "merged in memory"
        print(
            f"wrote {report.output} ({report.tensors_changed} weights changed, {how}, {report.seconds:.1f} s)"
        )
        return 0
    if args.to:
        raise LorakitError(
            "--to is for merging into a checkpoint (--model); a merged LoRA is one .safetensors file."
        )
    report = merge_loras(
        specs,
        args.out,
        new_rank=args.new_rank,
        new_conv_rank=args.new_conv_rank,
        concat=args.concat,
        same_to_strength=args.same_to_strength,
        clamp_quantile=args.clamp_quantile,
        precision=args.precision,
        device=args.device,
        progress=True,
    )
    ranks = sorted({f.rank for f in report.modules.values()})
    rank_text = str(ranks[0]) if len(ranks) == 1 else f"{ranks[0]}-{ranks[-1]}"
    print(f"{report.mode} merge of {len(specs)} LoRAs: {len(report.modules)} modules, rank {rank_text}")
    if report.retained:
        low = min(report.retained.values())
        mean = sum(report.retained.values()) / len(report.retained)
        print(f"SVD kept {mean:.1%} of the merged change on average (lowest module {low:.1%})")
    print(f"wrote {report.output}")
    return 0
