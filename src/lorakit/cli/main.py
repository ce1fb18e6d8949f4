"""The `lorakit` command: a thin face over the library. Each subcommand lives in its own module
with `register(subparsers)`, which adds its parser (`common.add_command`) and sets
`run(args) -> int`."""

from __future__ import annotations

import argparse
import difflib
import importlib
import logging
import os
import sys

from .. import __version__
from ..errors import LorakitError
from ..utils.quiet import quiet_third_party

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


class LorakitParser(argparse.ArgumentParser):
    """argparse with sd-scripts' spellings forgiven and typos answered: `--network-dim` is read
    as `--network_dim` (and `--print_config` as `--print-config`), and an option no command has
    gets the nearest names, as a config file's typo does. Subcommand parsers are made from the
    parser's own class, so every command gets this."""

    def _spelling(self, arg: str) -> str:
        """`arg` with dashes and underscores swapped, when only that spelling is an option here."""
        if not arg.startswith("--") or len(arg) < 3:
            return arg
        name, eq, value = arg.partition("=")
        if name in self._option_string_actions:
            return arg
        for other in ("--" + name[2:].replace("-", "_"), "--" + name[2:].replace("_", "-")):
            if other in self._option_string_actions:
                return other + eq + value
        return arg

    def suggestions(self, arg: str) -> list[str]:
        """The option names nearest to an unknown `--arg` (dashes and underscores alike)."""
        name = arg.partition("=")[0]
        key = name.lstrip("-").replace("-", "_").lower()
        options = {
            o.lstrip("-").replace("-", "_").lower(): o
            for o in self._option_string_actions
            if o.startswith("--")
        }
        close = difflib.get_close_matches(key, list(options), n=3, cutoff=0.7)
        return [options[c] for c in close]

    def parse_known_args(self, args=None, namespace=None):
        args = list(sys.argv[1:] if args is None else args)
        namespace, extras = super().parse_known_args([self._spelling(a) for a in args], namespace)
        unknown = [a for a in extras if a.startswith("--")]
        if unknown and self._subparsers is None:  # a command's own parser: it knows its options
            lines = []
            for arg in unknown:
                near = self.suggestions(arg)
                hint = f" Did you mean {' or '.join(near)}?" if near else ""
                lines.append(f"unknown option {arg.partition('=')[0]}.{hint}")
            self.error(" ".join(lines) + f" ('{self.prog} --help' lists every option.)")
        return namespace, extras


def build_parser() -> argparse.ArgumentParser:
    parser = LorakitParser(
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
    quiet_third_party()
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
