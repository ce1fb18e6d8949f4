"""The training form's presets, from `presets.toml` beside this file: kind x base model x memory,
each value with its one-line reason in English and Chinese."""

from __future__ import annotations

import functools
from pathlib import Path

from ..training.config import read_toml
from ..training.options import BY_NAME, check_value

PRESETS_FILE = Path(__file__).with_name("presets.toml")
LANGUAGES = ("en", "zh")


@functools.cache
def presets() -> list[dict]:
    """Every combination, in the form's order: {id, kind, base, memory, label, values}, where
    values maps an option to {value, en, zh} (later layers win: base, kind, memory)."""
    data = read_toml(PRESETS_FILE)
    out = []
    for kind, kind_label in data["kinds"].items():
        for base, base_label in data["bases"].items():
            for memory, memory_label in data["memory"].items():
                values: dict[str, dict] = {}
                for layer in (data["base"][base], data["kind"][kind], data["memory_values"][base][memory]):
                    values.update(layer)
                label = {
                    lang: f"{kind_label[lang]} · {base_label[lang]} · {memory_label[lang]}"
                    for lang in LANGUAGES
                }
                out.append(
                    {
                        "id": f"{kind}-{base}-{memory}",
                        "kind": kind,
                        "base": base,
                        "memory": int(memory),
                        "label": label,
                        "values": values,
                    }
                )
    return out


def preset_problems() -> list[str]:
    """What is wrong with the presets file (the tests assert there is nothing)."""
    problems = []
    for preset in presets():
        for name, entry in preset["values"].items():
            where = f"preset {preset['id']}: {name}"
            if name not in BY_NAME:
                problems.append(f"{where} is not a training option")
                continue
            missing = [lang for lang in LANGUAGES if not str(entry.get(lang, "")).strip()]
            if missing:
                problems.append(f"{where} has no reason in {', '.join(missing)}")
            try:
                check_value(BY_NAME[name], entry.get("value"), where)
            except Exception as e:  # noqa: BLE001 - every problem is collected, none raised
                problems.append(str(e))
    return problems
