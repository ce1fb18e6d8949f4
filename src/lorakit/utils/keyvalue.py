"""`key=value` lists, as sd-scripts takes `--network_args`, `--optimizer_args` and
`--lr_scheduler_args`: one parser for all of them, so the rules and the messages agree."""

from __future__ import annotations

import ast
import json
from collections.abc import Iterable, Mapping
from typing import Any

from ..errors import ConfigError


def parse_key_values(
    items: Iterable[str] | Mapping[str, Any] | None, name: str, error: type[Exception] = ConfigError
) -> dict[str, str]:
    """`["conv_dim=4", "algo=loha"]` (the command-line form) or a TOML table, as strings.
    `error` is the exception class raised for an item without `=`."""
    if items is None:
        return {}
    if isinstance(items, Mapping):
        return {
            str(k): v if isinstance(v, str) else json.dumps(v) if isinstance(v, list) else str(v)
            for k, v in items.items()
        }
    out = {}
    for item in items:
        if "=" not in item:
            raise error(f"{name}: '{item}' must be written key=value (for example conv_dim=4).")
        key, value = item.split("=", 1)
        out[key.strip()] = value.strip()
    return out


def parse_literal(text: str) -> Any:
    """'0.01' -> 0.01, 'True' -> True, '0.9,0.99' -> (0.9, 0.99), other text stays text."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text
    return tuple(value) if isinstance(value, list) else value
