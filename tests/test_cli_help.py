"""The command line as a new user meets it: every --help reads as plain text, and a mistyped
option gets the nearest names, as a typo in a config file does."""

import argparse

import pytest

from lorakit.cli.main import build_parser, main


def every_parser(parser: argparse.ArgumentParser, name: str = "lorakit"):
    """(command line, parser) for the top parser and every command and action below it."""
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command, sub in action.choices.items():
                yield from every_parser(sub, f"{name} {command}")


def test_every_help_text_is_rendered_without_format_leftovers():
    parsers = list(every_parser(build_parser()))
    names = {name for name, _ in parsers}
    assert {"lorakit train", "lorakit lr-find", "lorakit dataset check", "lorakit prep resize"} <= names
    for name, parser in parsers:
        text = parser.format_help()
        assert "{'option_strings'" not in text, (
            f"{name} --help prints an argparse dict (a lone % in a help text)"
        )
        assert "%(" not in text and "%%" not in text, f"{name} --help has a format leftover"
    train = dict(parsers)["lorakit train"].format_help()
    assert "about 20% slower" in " ".join(train.split())


@pytest.mark.parametrize("spelling", ["--network-dim", "--network_dim", "--network-dim=16"])
def test_dashes_and_underscores_are_one_option(spelling, tmp_path, capsys):
    config = tmp_path / "c.toml"
    config.write_text('pretrained_model_name_or_path = "m.safetensors"\n')
    argv = ["train", str(config), "--print_config"]
    argv += [spelling] if "=" in spelling else [spelling, "16"]
    assert main(argv) == 0
    assert "network_dim = 16" in capsys.readouterr().out.splitlines()


def test_a_mistyped_option_gets_the_nearest_names(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["train", "c.toml", "--network_dimm", "16"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "unknown option --network_dimm. Did you mean --network_dim?" in err
    assert "'lorakit train --help' lists every option" in err
    with pytest.raises(SystemExit):
        main(["dataset", "check", "train/", "--caption-extention", ".txt"])
    assert "Did you mean --caption_extension?" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["grid", "--run", "out", "--fontsize", "20"])
    assert "Did you mean --font-size?" in capsys.readouterr().err
