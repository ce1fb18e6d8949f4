"""The `lorakit` command: a thin face over the library. Each subcommand lives in its own module
with `register(subparsers)`, which adds its parser and sets `run(args) -> int`."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from .. import __version__
from ..errors import LorakitError

# command -> module in this package; the order is the order `lorakit --help` lists them in.
COMMANDS = {
    "quickstart": "quickstart_cmd",
    "dataset": "dataset_cmd",
    "prep": "prep_cmd",
    "tag": "tag_cmd",
    "caption": "caption_cmd",
    "tags": "tags_cmd",
    "train": "train_cmd",
    "lr-find": "lr_find_cmd",
    "generate": "generate_cmd",
    "grid": "grid_cmd",
    "merge": "merge_cmd",
    "resize": "resize_cmd",
    "extract": "extract_cmd",
    "inspect": "inspect_cmd",
    "convert": "convert_cmd",
    "ui": "ui_cmd",
}


class _CommandListFormatter(argparse.HelpFormatter):
    """argparse measures subcommand names without the extra indent it draws them with, so the
    longest name ("quickstart") would push its help onto the next line; count the indent."""

    def add_argument(self, action):
        super().add_argument(action)
        if isinstance(action, argparse._SubParsersAction):
            longest = max((len(a.metavar or a.dest) for a in action._get_subactions()), default=0)
            self._action_max_length = max(self._action_max_length, self._current_indent + 2 + longest)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lorakit",
        description="Train LoRA and LyCORIS add-on models for Stable Diffusion (SD1.x, SD2.x, SDXL).",
        epilog="Run 'lorakit COMMAND --help' to see what each option of a command does.",
        formatter_class=_CommandListFormatter,
    )
    parser.add_argument("--version", action="version", version=f"lorakit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for module in COMMANDS.values():
        importlib.import_module(f".{module}", __package__).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    # library chatter (optional backends, deprecations) is not for users; lorakit says what matters
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for noisy in ("diffusers", "transformers", "accelerate"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return 1
    try:
        return args.run(args) or 0
    except LorakitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a full disk, a missing permission, outside the places that explain it
        where = f" ({e.filename})" if e.filename else ""
        print(f"error: {e.strerror or e}{where}. Check the disk space and the folder's permissions.", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
