"""`lorakit generate`: images from a model plus LoRA files, with the settings written into each
PNG the way A1111 writes them."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import add_command, add_v_parameterization


def add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="The base model: a .safetensors/.ckpt checkpoint or a diffusers folder.")
    p.add_argument("--vae", help="A separate VAE file to use instead of the model's own.")
    add_v_parameterization(p, "Treat", "--v-parameterization")
    p.add_argument("--device", default="auto", help="cuda, cpu, mps, or auto (the GPU if there is one).")
    p.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "fp32", "fp16", "bf16"],
        help="Number format for generating. auto: fp16 on a GPU, fp32 on the CPU.",
    )
    p.add_argument(
        "--embeddings",
        "--embeddings-dir",
        metavar="DIR",
        help="A folder of textual-inversion embeddings (A1111's embeddings folder): a word of the prompt that "
        "is a file's name (ohwx for ohwx.safetensors) uses that embedding.",
    )
    p.add_argument(
        "--hypernetwork",
        action="append",
        default=[],
        metavar="FILE[:STRENGTH]",
        help="An A1111 hypernetwork (.pt) applied to every image, with its strength (default 1). Repeat for more.",
    )


def add_generation_options(p: argparse.ArgumentParser, batch: bool = True) -> None:
    p.add_argument(
        "--prompt",
        help="The prompt, written as for A1111: (word:1.2) emphasis, BREAK, any length, and tags "
        "like <lora:name:0.8>.",
    )
    p.add_argument(
        "--prompts",
        help="A prompt file as sd-scripts reads it (.txt, .toml or .json; lines like "
        "'a cat --n blurry --w 512 --h 768 --d 1 --s 28 --l 7 --ss euler_a').",
    )
    p.add_argument("--negative", "--negative-prompt", default="", help="The negative prompt.")
    p.add_argument(
        "--lora",
        action="append",
        default=[],
        metavar="FILE[:WEIGHT[:UNET]][:BLOCKS]",
        help="A LoRA/LyCORIS file to apply, with its weight (default 1), optionally a separate U-Net "
        "weight (the first weight then applies to the text encoder only, as A1111's "
        "<lora:name:TE:UNET>; te=, unet= and lbw= work too) and A1111 block weights (a preset like "
        "OUTALL or 17/26 numbers for SD1, 12/20 for SDXL). Repeat for more.",
    )
    p.add_argument(
        "--prompt-style",
        "--prompt_style",
        default="a1111",
        choices=["a1111", "comfy", "plain"],
        help="How prompts are read. a1111 (default): as A1111 reads them: (word) x1.1, [word] /1.1, "
        "(word:1.3), BREAK, prompts of any length in chunks of 75 tokens. comfy: the same grammar and "
        "chunks, weighted as ComfyUI weighs: each weighted word is pushed away from the empty prompt "
        "instead of A1111's rescaling of each chunk to its old mean. plain: brackets and BREAK are "
        "ordinary text (A1111's 'Emphasis: None').",
    )
    p.add_argument("--lora-dir", "--lora_dir", help="Folder where <lora:name> tags in prompts are looked up.")
    p.add_argument(
        "--sampler",
        default=None,
        help="A1111 sampler name, e.g. 'DPM++ 2M Karras', 'Euler a', 'DDIM' (sd-scripts names like "
        "euler_a work too). Default: DPM++ 2M Karras.",
    )
    p.add_argument("--steps", type=int, default=None, help="Sampling steps (default 30).")
    p.add_argument(
        "--cfg",
        "--scale",
        type=float,
        default=None,
        help="CFG scale: how closely to follow the prompt (default 7.5).",
    )
    p.add_argument(
        "--seed", type=int, default=-1, help="Seed; -1 picks a random one (it is written into the PNG)."
    )
    p.add_argument(
        "--width", type=int, default=None, help="Image width in pixels (default: the model's own size)."
    )
    p.add_argument(
        "--height", type=int, default=None, help="Image height in pixels (default: the model's own size)."
    )
    if batch:
        p.add_argument("--batch", type=int, default=1, help="Images per prompt; image n gets seed + n.")
    p.add_argument(
        "--clip-skip",
        "--clip_skip",
        type=int,
        default=None,
        help="A1111 'Clip skip': 1 uses the text encoder's last layer, 2 the one before (common for anime models).",
    )


def register(sub) -> None:
    p = add_command(
        sub,
        "generate",
        help="Make images with a model and LoRA files (A1111 samplers and PNG info).",
        description="Make images from a base model with LoRA/LyCORIS files applied by lorakit's own code, "
        "using A1111 sampler names. Each PNG carries its settings in the A1111 'parameters' field, so A1111's "
        "PNG Info tab, ComfyUI and image browsers show them.",
    )
    add_model_options(p)
    add_generation_options(p)
    p.add_argument("--out", required=True, help="Folder to write the images into.")
    p.set_defaults(run=run)


def add_model_extras(generator, args: argparse.Namespace) -> None:
    """--embeddings and --hypernetwork on the loaded model, saying what was loaded."""
    if args.embeddings:
        loaded, skipped = generator.load_embeddings(args.embeddings)
        print(f"embeddings: {', '.join(loaded) or 'none'} (from {args.embeddings})")
        for why in skipped:
            print(f"note: embedding passed over: {why}", file=sys.stderr)
    if args.hypernetwork:
        generator.use_hypernetworks(args.hypernetwork)
        print("hypernetworks: " + ", ".join(f"{n.name} x {s:g}" for n, s in generator.hypernetworks))


def base_settings(args: argparse.Namespace):
    """The command's settings; prompt-file entries override them one by one."""
    from ..evaluation.generate import GenerationSettings
    from ..evaluation.prompts import DEFAULT_CFG, DEFAULT_STEPS, parse_lora_option
    from ..evaluation.samplers import DEFAULT_SAMPLER, find_sampler

    if args.sampler:
        find_sampler(args.sampler)  # a typo fails before the model is loaded
    return GenerationSettings(
        prompt="",
        negative_prompt=args.negative or "",
        sampler=args.sampler or DEFAULT_SAMPLER,
        steps=args.steps or DEFAULT_STEPS,
        cfg=args.cfg if args.cfg is not None else DEFAULT_CFG,
        seed=args.seed,
        width=args.width,
        height=args.height,
        batch=getattr(args, "batch", 1),
        clip_skip=args.clip_skip or 1,
        loras=[parse_lora_option(text) for text in args.lora],
        prompt_style=args.prompt_style,
    )


def prompt_specs(args: argparse.Namespace):
    from ..errors import LorakitError
    from ..evaluation.prompts import PromptSpec, load_prompts

    if args.prompts and args.prompt:
        raise LorakitError("give --prompt or --prompts, not both.")
    if args.prompts:
        return load_prompts(args.prompts)
    if args.prompt is not None:
        return [PromptSpec(prompt=args.prompt)]
    return None


def run(args: argparse.Namespace) -> int:
    from ..errors import LorakitError
    from ..evaluation.generate import BLANK_ADVICE, open_generator, save_images, settings_for_prompt

    if not args.model:
        raise LorakitError("--model is required: the base model to generate with.")
    specs = prompt_specs(args)
    if specs is None:
        raise LorakitError("give a --prompt, or a prompt file with --prompts.")
    defaults = base_settings(args)
    lora_dir = args.lora_dir or (defaults.loras[0].path.parent if defaults.loras else None)
    requests = [settings_for_prompt(spec, defaults, lora_dir) for spec in specs]
    generator = open_generator(args.model, args.vae, args.v_parameterization, args.device, args.precision)
    add_model_extras(generator, args)
    for request in requests:
        generator.resolve(request)
        for lora in request.loras:
            generator.networks.check(lora)
    out = Path(args.out)
    for request in requests:
        images = generator(request)
        for path, image in zip(save_images(images, out), images):
            print(path)
            if image.problem:
                print(f"warning: {path.name} is {image.problem}: {BLANK_ADVICE}.", file=sys.stderr)
    generator.close()
    return 0
