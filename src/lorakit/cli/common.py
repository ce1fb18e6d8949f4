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


def add_v_parameterization(p: argparse.ArgumentParser, verb: str = "Treat", *aliases: str) -> None:
    """--v_parameterization of the commands that read a model: SD2 768-v files often do not say
    that they predict v, so the user has to; `verb` says what the command does with it."""
    p.add_argument(
        "--v_parameterization",
        *aliases,
        action="store_true",
        default=None,
        help=f"{verb} the model as v-prediction (SD2 768-v models whose file does not say so).",
    )


def add_device_option(p: argparse.ArgumentParser, work: str) -> None:
    """--device of the tools that do linear algebra on weights (`work`: "compute the SVD")."""
    p.add_argument(
        "--device",
        default="auto",
        help=f"Where to {work}: auto (the GPU if there is one, else the CPU), cpu, cuda or cuda:N.",
    )
