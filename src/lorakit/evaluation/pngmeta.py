"""The A1111 "parameters" PNG text chunk: how A1111, ComfyUI's loaders, Civitai and image
browsers learn the prompt, sampler, seed and networks an image was made with.

Layout (A1111 `create_infotext`):

    a photo of a cat <lora:mylora:0.8>
    Negative prompt: blurry
    Steps: 30, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 1, Size: 512x512, Model hash: 6ce0161689, Model: v1-5, Lora hashes: "mylora: 0123456789ab", Clip skip: 2

Values holding `,` `:` or a newline are written as JSON strings, as A1111 does. Text that is not
Latin-1 (a Chinese prompt) goes into an iTXt chunk, which A1111 reads the same way.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from ..errors import LorakitError

KEY = "parameters"


@dataclass
class GenerationParameters:
    prompt: str
    negative_prompt: str = ""
    steps: int | None = None
    sampler: str | None = None
    cfg: float | None = None
    seed: int | None = None
    width: int | None = None
    height: int | None = None
    model_hash: str | None = None
    model: str | None = None
    clip_skip: int | None = None
    lora_hashes: dict[str, str] = field(default_factory=dict)
    extra: dict[str, str] = field(default_factory=dict)  # any other "Key: value" pairs, in order

    def to_text(self) -> str:
        return format_parameters(self)


def _quote(value) -> str:
    text = str(value)
    if "," not in text and "\n" not in text and ":" not in text and '"' not in text:
        return text
    return json.dumps(text, ensure_ascii=False)


def _number(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def format_parameters(p: GenerationParameters) -> str:
    pairs: list[tuple[str, object]] = []
    if p.steps is not None:
        pairs.append(("Steps", p.steps))
    if p.sampler:
        pairs.append(("Sampler", p.sampler))
    if p.cfg is not None:
        pairs.append(("CFG scale", _number(p.cfg)))
    if p.seed is not None:
        pairs.append(("Seed", p.seed))
    if p.width and p.height:
        pairs.append(("Size", f"{p.width}x{p.height}"))
    if p.model_hash:
        pairs.append(("Model hash", p.model_hash))
    if p.model:
        pairs.append(("Model", p.model))
    if p.lora_hashes:
        pairs.append(("Lora hashes", ", ".join(f"{k}: {v}" for k, v in p.lora_hashes.items())))
    if p.clip_skip and p.clip_skip > 1:  # A1111 writes it only when layers are skipped
        pairs.append(("Clip skip", p.clip_skip))
    pairs.extend(p.extra.items())
    lines = [p.prompt]
    if p.negative_prompt:
        lines.append(f"Negative prompt: {p.negative_prompt}")
    lines.append(", ".join(f"{k}: {_quote(v)}" for k, v in pairs))
    return "\n".join(lines)


# A1111's `re_param_code`: `Key: value` pairs, values possibly JSON-quoted
_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_SIZE = re.compile(r"^(\d+)x(\d+)$")


def parse_parameters(text: str) -> GenerationParameters:
    """Read A1111 parameters text (from lorakit, A1111, Forge, ...)."""
    lines = text.strip().split("\n")
    last = lines[-1] if lines else ""
    if len(_PARAM.findall(last)) < 3:  # no settings line, only a prompt
        lines.append(last)
        last = ""
    prompt_lines: list[str] = []
    negative_lines: list[str] = []
    in_negative = False
    for line in lines[:-1]:
        if line.startswith("Negative prompt:"):
            in_negative = True
            line = line[len("Negative prompt:") :].strip()
        (negative_lines if in_negative else prompt_lines).append(line)
    values: dict[str, str] = {}
    for key, value in _PARAM.findall(last):
        value = value.strip()
        if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                value = value[1:-1]
        values[key.strip()] = value
    p = GenerationParameters(prompt="\n".join(prompt_lines), negative_prompt="\n".join(negative_lines))
    p.steps = _int(values.pop("Steps", None))
    p.sampler = values.pop("Sampler", None)
    schedule = values.get("Schedule type")
    if p.sampler and schedule and schedule.lower() == "karras" and not p.sampler.endswith("Karras"):
        p.sampler = f"{p.sampler} Karras"  # A1111 1.9+ writes the schedule apart
        values.pop("Schedule type")
    cfg = values.pop("CFG scale", None)
    p.cfg = float(cfg) if cfg not in (None, "") else None
    p.seed = _int(values.pop("Seed", None))
    size = _SIZE.match(values.pop("Size", "") or "")
    if size:
        p.width, p.height = int(size[1]), int(size[2])
    p.model_hash = values.pop("Model hash", None)
    p.model = values.pop("Model", None)
    p.clip_skip = _int(values.pop("Clip skip", None))
    hashes = values.pop("Lora hashes", None)
    if hashes:
        for item in hashes.split(","):
            name, _, digest = item.strip().rpartition(":")
            if name:
                p.lora_hashes[name.strip()] = digest.strip()
    p.extra = values
    return p


def _int(value: str | None) -> int | None:
    if value in (None, ""):
        return None
    try:
        return int(value)
    except ValueError:
        return None


def png_info(parameters: GenerationParameters | str, extra: Mapping[str, str] | None = None) -> PngInfo:
    info = PngInfo()
    info.add_text(KEY, parameters if isinstance(parameters, str) else parameters.to_text())
    for key, value in (extra or {}).items():
        info.add_text(key, value)
    return info


def read_parameters(path: str | Path) -> GenerationParameters:
    """The parameters of a PNG written by lorakit or A1111."""
    with Image.open(path) as image:
        text = getattr(image, "text", {}).get(KEY) or image.info.get(KEY)
    if text is None:
        raise LorakitError(f"{path} has no '{KEY}' text chunk (it was not written by A1111 or lorakit).")
    return parse_parameters(text)


def addnet_hash(path: str | Path) -> str:
    """sha256 of a .safetensors file's tensor data (the header skipped): A1111's LoRA hash (its
    first 12 characters go into "Lora hashes") and Civitai's AutoV3. Other files: the whole file."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        if str(path).lower().endswith(".safetensors"):
            n = int.from_bytes(f.read(8), "little")
            f.seek(8 + n)
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
