"""`lorakit caption DIR`: a natural-language caption for every image (BLIP, Florence-2, GIT)."""

from __future__ import annotations

import argparse

from .common import add_command
from .tag_cmd import add_folder_options, print_result, run_on_folder


def register(sub) -> None:
    p = add_command(
        sub,
        "caption",
        help="Write a sentence caption for every image with BLIP, Florence-2 or GIT (like sd-scripts' make_captions.py).",
        description="Caption every image of DIR and write NAME.caption beside it. BLIP uses the defaults of "
        "sd-scripts' make_captions.py (nucleus sampling, top_p 0.9, 5 to 75 tokens, 384 px). Files that are "
        "overwritten are first copied to DIR/.lorakit-backup/ ('lorakit tags restore DIR' undoes the run).",
    )
    add_folder_options(p, ".caption")
    p.add_argument(
        "--model",
        metavar="NAME",
        help="The captioner: a folder with a downloaded model (config.json, model.safetensors, processor and "
        "tokenizer files), a name from 'lorakit tag --list-models', or a Hugging Face repo id. Default: blip-large.",
    )
    p.add_argument(
        "--prefix", default="", metavar="TEXT", help="Text put before every caption, e.g. the trigger word."
    )
    p.add_argument("--suffix", default="", metavar="TEXT", help="Text put after every caption.")
    p.add_argument(
        "--task",
        default="<CAPTION>",
        metavar="TASK",
        help="Florence-2 only: <CAPTION>, <DETAILED_CAPTION> or <MORE_DETAILED_CAPTION> (longer and longer). "
        "Default: <CAPTION>.",
    )
    p.add_argument(
        "--prompt",
        metavar="TEXT",
        help="BLIP only: the text each caption continues, e.g. 'a picture of' (left out of the file).",
    )
    search = p.add_mutually_exclusive_group()
    search.add_argument(
        "--beam_search",
        action="store_true",
        default=None,
        help="Beam search: the likeliest caption, the same every run (Florence-2 and GIT do this by default).",
    )
    search.add_argument(
        "--sample",
        dest="beam_search",
        action="store_false",
        help="Nucleus sampling with --top_p: more varied captions (BLIP's default, as make_captions.py).",
    )
    p.add_argument(
        "--num_beams",
        type=int,
        metavar="N",
        help="Beams for --beam_search. Default: 1 (BLIP, GIT), 3 (Florence-2).",
    )
    p.add_argument(
        "--top_p",
        type=float,
        default=0.9,
        metavar="P",
        help="Nucleus sampling: keep this share of the likeliest words. Default: 0.9.",
    )
    p.add_argument(
        "--max_length",
        type=int,
        metavar="N",
        help="Longest caption in tokens. Default: 75 (BLIP), 50 (GIT), 1024 (Florence-2).",
    )
    p.add_argument(
        "--min_length", type=int, metavar="N", help="Shortest caption in tokens. Default: 5 (BLIP)."
    )
    p.add_argument("--seed", type=int, default=42, help="Random seed for sampling. Default: 42.")
    p.add_argument("--fp32", action="store_true", help="Full precision on a GPU too (default there: fp16).")
    p.set_defaults(run=run_caption)


def run_caption(args: argparse.Namespace) -> int:
    from ..data.tagging import CaptionOptions, caption_folder, load_captioner, locate_captioner
    from ..errors import ConfigError

    if not args.folder:
        raise ConfigError("give the folder of images to caption: lorakit caption DIR.")
    options = CaptionOptions(
        beam_search=args.beam_search,
        num_beams=args.num_beams,
        top_p=args.top_p,
        max_length=args.max_length,
        min_length=args.min_length,
        task=args.task,
        prompt=args.prompt,
        seed=args.seed,
    )
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # its "Loading weights" bar; lorakit shows its own
    captioner = load_captioner(
        locate_captioner(args.model, args.model_dir), device=args.device, fp32=args.fp32
    )
    result = run_on_folder(args, caption_folder, captioner, options, prefix=args.prefix, suffix=args.suffix)
    code = print_result(result, args, "captioned", "caption")
    print(
        f"model: {captioner.folder.name} ({captioner.family}, {captioner.device.type}, {str(captioner.dtype).removeprefix('torch.')})"
    )
    return code
