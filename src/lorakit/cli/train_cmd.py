"""`lorakit train CONFIG [--option value ...]`: train a LoRA from a TOML config."""

from __future__ import annotations

import argparse

from ..training.control import ACTIONS
from ..training.options import OPTIONS, SECTIONS
from .common import add_command

_SECTION_TITLES = {
    "model": "base model",
    "dataset": "images and captions",
    "network": "the LoRA network",
    "optimizer": "optimizer and learning rate",
    "training": "training",
    "method": "what to train (LoRA, DreamBooth, Textual Inversion, Hypernetwork)",
    "sampling": "preview images",
    "saving": "saving and resuming",
    "logging": "logging",
}


def add_option_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per option of the table, grouped by section; defaults stay None so that only
    the flags a user typed override the config file."""
    for section in SECTIONS:
        group = parser.add_argument_group(_SECTION_TITLES[section])
        for option in (o for o in OPTIONS if o.section == section):
            default = f" (default: {option.default})" if option.default not in (None, [], False) else ""
            kwargs = {
                # argparse formats help with %: a plain "20%" must be written "20%%"
                "help": (option.help + default).replace("%", "%%"),
                "default": None,
            }
            if option.kind == "bool":
                kwargs.update(nargs="?", const=True, metavar="true|false")
            elif option.kind in ("list", "floats"):
                kwargs.update(nargs="+", metavar="VALUE")
            else:
                kwargs["metavar"] = option.kind.upper() if option.kind != "str" else "VALUE"
            group.add_argument(f"--{option.name}", dest=f"opt_{option.name}", **kwargs)


def overrides(args: argparse.Namespace) -> dict:
    out = {}
    for option in OPTIONS:
        value = getattr(args, f"opt_{option.name}", None)
        if value is not None:
            out[option.name] = value[0] if option.kind == "floats" and len(value) == 1 else value
    return out


def register(sub) -> None:
    p = add_command(
        sub,
        "train",
        help="Train a LoRA from a config file (lorakit or sd-scripts TOML).",
        description="Train a LoRA (or LoCon, LoHa, LoKr, DyLoRA) on a Stable Diffusion checkpoint. CONFIG is a "
        "TOML file: lorakit's own or the one sd-scripts takes with --config_file (lora-scripts configs work too). "
        "Any option below given on the command line overrides the file. Before the first step lorakit prints "
        "the plan (images, repeats, steps, memory) and warns about risky settings. While it runs, "
        "'lorakit train CONFIG --control save' (from another terminal) asks it to save now; the run "
        "writes its progress as JSON lines to OUTPUT_DIR/events.jsonl.",
        usage="lorakit train CONFIG [--print-config] [--option VALUE ...]\n"
        "       lorakit train [CONFIG] --control {sample,save,stop} [--output_dir DIR]",
    )
    p.add_argument("config", nargs="?", help="The TOML config file.")
    p.add_argument(
        "--print-config", action="store_true", help="Print the resolved configuration as TOML and stop."
    )
    p.add_argument("--quiet", action="store_true", help="Print only warnings and errors.")
    p.add_argument(
        "--control",
        choices=list(ACTIONS),
        metavar="ACTION",
        help="Do not train: send a request to the training that is running into the output folder (the "
        "config's output_dir, or --output_dir) and return at once. "
        + "; ".join(f"{name}: {why}" for name, why in ACTIONS.items())
        + ". It is carried out after the current step.",
    )
    add_option_flags(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..training.config import load_config, to_toml

    config = load_config(args.config, overrides(args))
    if args.control:
        return send_control(config.output_dir, args.control)
    if args.print_config:
        print(to_toml(config))
        for key, why in config.ignored.items():
            print(f"# ignored: {key}: {why}")
        return 0
    from ..training.recipe import train

    result = train(config, quiet=args.quiet)
    return 0 if result.final_file else 1


def send_control(output_dir: str, action: str) -> int:
    from pathlib import Path

    from ..runs import EVENTS_FILE
    from ..training.control import send
    from ..training.events import read_events

    path = send(output_dir, action)
    print(
        f"sent '{action}' to the training in {output_dir} ({path.name}); it is done after the current step."
    )
    ends = read_events(Path(output_dir) / EVENTS_FILE, kinds=["plan", "end"])
    if not ends or ends[-1]["kind"] == "end":
        print(
            "note: no training seems to be running in this folder (its events.jsonl has ended); "
            "a training started later drops requests sent before it.",
        )
    return 0
