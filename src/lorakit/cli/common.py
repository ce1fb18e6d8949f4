"""What the command modules share: how a command's (or an action's) parser is made, so every
`lorakit COMMAND --help` is built the same way."""

from __future__ import annotations

import argparse


def add_command(sub, name: str, help: str, description: str, **options) -> argparse.ArgumentParser:
    """The parser of command `name` under `sub`: `help` is its line in the parent's list,
    `description` heads its own --help; `options` (usage=, formatter_class=) go to argparse."""
    return sub.add_parser(name, help=help, description=description, **options)


def add_actions(parser: argparse.ArgumentParser, dest: str):
    """The ACTION subcommands of a command with several (`lorakit tags add`, `lorakit prep resize`)."""
    return parser.add_subparsers(dest=dest, metavar="ACTION", title="actions")
