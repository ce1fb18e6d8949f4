"""Prompts as users already write them: sd-scripts sample-prompt lines and files, and A1111's
`<lora:name:weight>` tags.

sd-scripts line: `a cat --n blurry --w 512 --h 768 --d 42 --s 28 --l 7 --ss euler_a`
(negative, width, height, seed, steps 1-1000, CFG scale, sampler). A prompt file is `.txt` (one
line each, `#` lines skipped), `.toml` (`[prompt]` defaults plus `[[prompt.subset]]` entries) or
`.json` (a list of lines or of dicts with sd-scripts' keys). The training previews use the same
reader, so a file that works for sd-scripts works for both.
"""

from __future__ import annotations

import difflib
import json
import logging
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..models.prompt_syntax import PromptError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

log = logging.getLogger(__name__)

# sd-scripts' defaults for a sample prompt. Width/height default to the model's own resolution
# instead of 512 (sd-scripts' 512 gives poor SDXL previews, sd-scripts #622).
DEFAULT_STEPS = 30
DEFAULT_CFG = 7.5
NETWORK_SUFFIXES = (".safetensors", ".pt", ".ckpt")


@dataclass
class LoraRef:
    """One network to apply: file, strength, an optional A1111 block-weight vector/preset, and an
    optional separate U-Net strength (A1111's `<lora:name:TE:UNET>`; `weight` is then the text
    encoder's)."""

    path: Path
    weight: float = 1.0
    blocks: str | None = None
    unet_weight: float | None = None

    @property
    def name(self) -> str:
        return self.path.stem

    @property
    def unet(self) -> float:
        """The U-Net's strength."""
        return self.weight if self.unet_weight is None else self.unet_weight

    def tag(self) -> str:
        """The A1111 prompt tag that reproduces this network (LBW extension syntax for blocks)."""
        parts = [self.name, f"{self.weight:g}"]
        if self.unet != self.weight:
            parts.append(f"{self.unet:g}")
        if self.blocks:
            parts.append(f"lbw={self.blocks}")
        return f"<lora:{':'.join(parts)}>"


@dataclass
class PromptSpec:
    """One image request from a prompt line/file; None means "use the command's default"."""

    prompt: str
    negative_prompt: str = ""
    width: int | None = None
    height: int | None = None
    seed: int | None = None
    steps: int | None = None
    cfg: float | None = None
    sampler: str | None = None
    loras: list[LoraRef] = field(default_factory=list)
    index: int = 0  # position in the prompt file; sd-scripts names sample files by it

    def with_defaults(self, **defaults) -> PromptSpec:
        """A copy with every unset field taken from `defaults`."""
        return replace(self, **{k: v for k, v in defaults.items() if getattr(self, k) is None})


_OPTION = re.compile(r"^(ss|n|w|h|d|s|l|g|\w+)\s+(.*)$", re.IGNORECASE | re.DOTALL)


def parse_prompt_line(line: str, index: int = 0) -> PromptSpec:
    """An sd-scripts prompt line. Unknown options (`--cn`, `--am`, ...) are ignored with a note,
    as sd-scripts ignores them; a bad number is an error rather than a silently default value."""
    parts = line.strip().split(" --")
    spec = PromptSpec(prompt=parts[0].strip(), index=index)
    for part in parts[1:]:
        m = _OPTION.match(part.strip())
        if not m:
            log.info("prompt %d: ignoring option '--%s'", index + 1, part.strip())
            continue
        key, value = m[1].lower(), m[2].strip()
        try:
            if key == "n":
                spec.negative_prompt = value
            elif key == "w":
                spec.width = int(value)
            elif key == "h":
                spec.height = int(value)
            elif key == "d":
                spec.seed = int(value)
            elif key == "s":
                spec.steps = max(1, min(1000, int(value)))
            elif key == "l":
                spec.cfg = float(value)
            elif key == "ss":
                spec.sampler = value
            else:
                log.info("prompt %d: ignoring option '--%s' (not used for SD1/SD2/SDXL)", index + 1, key)
        except ValueError as e:
            raise PromptError(
                f"prompt {index + 1}: '--{key} {value}' needs a number. Line: {line.strip()!r}"
            ) from e
    return spec


_DICT_KEYS = {
    "prompt": "prompt",
    "negative_prompt": "negative_prompt",
    "width": "width",
    "height": "height",
    "seed": "seed",
    "sample_steps": "steps",
    "steps": "steps",
    "scale": "cfg",
    "cfg": "cfg",
    "sample_sampler": "sampler",
    "sampler": "sampler",
}
_CASTS = {"width": int, "height": int, "seed": int, "steps": int, "cfg": float}


def prompt_from_dict(data: Mapping, index: int = 0, where: str = "") -> PromptSpec:
    """A prompt given as a dict with sd-scripts' keys (prompt, negative_prompt, width, height,
    seed, sample_steps, scale, sample_sampler)."""
    if "prompt" not in data:
        raise PromptError(f"{where}prompt {index + 1} has no 'prompt' entry: {dict(data)!r}")
    values = {}
    for key, value in data.items():
        name = _DICT_KEYS.get(key)
        if name is None:
            continue
        try:
            values[name] = _CASTS[name](value) if name in _CASTS and value is not None else value
        except (TypeError, ValueError) as e:
            raise PromptError(f"{where}prompt {index + 1}: '{key}' = {value!r} is not a number.") from e
    if "steps" in values:
        values["steps"] = max(1, min(1000, values["steps"]))
    spec = PromptSpec(index=index, **values)
    spec.negative_prompt = spec.negative_prompt or ""
    return spec


def load_prompts(source: str | Path | Iterable) -> list[PromptSpec]:
    """Prompts from a `.txt`/`.toml`/`.json` file, or from a list of lines and/or dicts (what a
    run record or a config file holds)."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise PromptError(f"prompt file {path} does not exist.")
        items = _read_prompt_file(path)
        where = f"{path}: "
    else:
        items, where = list(source), ""
    prompts = []
    for item in items:
        index = len(prompts)
        if isinstance(item, str):
            prompts.append(parse_prompt_line(item, index))
        elif isinstance(item, Mapping):
            prompts.append(prompt_from_dict(item, index, where))
        else:
            raise PromptError(f"{where}prompt {index + 1} is neither text nor a table: {item!r}")
    if not prompts:
        raise PromptError(f"{where or 'the prompt list '}contains no prompts.")
    return prompts


def _read_prompt_file(path: Path) -> list:
    text = path.read_text(encoding="utf-8-sig")
    suffix = path.suffix.lower()
    if suffix == ".toml":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise PromptError(f"{path} is not valid TOML: {e}") from e
        section = data.get("prompt")
        if not isinstance(section, dict) or not isinstance(section.get("subset"), list):
            raise PromptError(
                f"{path}: a TOML prompt file needs a [prompt] table with [[prompt.subset]] entries, "
                "as sd-scripts reads it."
            )
        defaults = {k: v for k, v in section.items() if k != "subset"}
        return [{**defaults, **subset} for subset in section["subset"]]
    if suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise PromptError(f"{path} is not valid JSON: {e}") from e
        if not isinstance(data, list):
            raise PromptError(f"{path}: a JSON prompt file holds a list of prompts (lines or tables).")
        return data
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


# ---- A1111 <lora:...> tags ------------------------------------------------------------------

_TAG = re.compile(r"<(lora|lyco):([^>]+)>", re.IGNORECASE)


def extract_lora_tags(prompt: str, lora_dir: str | Path | None) -> tuple[str, list[LoraRef]]:
    """The prompt without its `<lora:...>` tags, and the networks they name.

    Accepted like A1111 and its LoRA Block Weight extension: `<lora:name>`, `<lora:name:0.8>`,
    `<lora:name:TE:UNET>`, `<lora:name:te=0.8:unet=0.5>`, `<lora:name:0.8:lbw=OUTALL>`,
    `<lora:name:0.8:OUTALL>`, `<lora:name:0.8:1,0,0,...>`; `<lyco:...>` too. `name` is a file stem
    under `lora_dir` (searched recursively) or a path. A tag is cut out and nothing else, as A1111
    does, so the commas around it stay: they are tokens of the prompt A1111 encodes.
    """
    loras = [_parse_tag(m[0], m[2], lora_dir) for m in _TAG.finditer(prompt)]
    return re.sub(r"\s{2,}", " ", _TAG.sub("", prompt)).strip(), loras


def _parse_tag(tag: str, body: str, lora_dir) -> LoraRef:
    parts = [p.strip() for p in body.split(":")]
    name, rest = parts[0], parts[1:]
    # a Windows path ("C:\x\y") was split at its drive colon
    if len(name) == 1 and rest and rest[0].startswith(("\\", "/")):
        name, rest = f"{name}:{rest[0]}", rest[1:]
    weight, unet, blocks = lora_strengths(rest, tag)
    return LoraRef(resolve_lora(name, lora_dir), weight, blocks, unet)


_FLOAT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_UNSUPPORTED = {
    "dyn": "'dyn' (DyLoRA's rank)",
    "start": "LBW's start step",
    "stop": "LBW's stop step",
    "step": "LBW's step range",
}


def lora_strengths(parts: list[str], where: str) -> tuple[float, float | None, str | None]:
    """(text-encoder strength, U-Net strength or None for the same, block weights) from the parts
    after the name, read as A1111 and the LBW extension read them: positional TE, UNET (UNET
    defaults to TE), named `te=`, `unet=`, `lbw=`; a part that is not a number is the blocks."""
    named, numbers, blocks = {}, [], None
    for part in parts:
        key, eq, value = part.partition("=")
        if eq:
            named[key.strip().lower()] = value.strip()
        elif _FLOAT.fullmatch(part) or not numbers:
            numbers.append(_strength(part, where))
        elif blocks is None:
            blocks = part
        else:
            raise PromptError(f"{where}: too many parts; write NAME:TE[:UNET][:lbw=BLOCKS].")
    for key in named:
        if key in _UNSUPPORTED:
            raise PromptError(f"{where}: {_UNSUPPORTED[key]} is not supported; leave '{key}=' out.")
        if key not in ("te", "unet", "lbw"):
            raise PromptError(f"{where}: unknown setting '{key}='; use te=, unet= or lbw=.")
    if len(numbers) > 2:
        raise PromptError(f"{where}: a third number is {_UNSUPPORTED['dyn']}, which is not supported.")
    if blocks is not None and "lbw" in named:
        raise PromptError(f"{where}: two block-weight settings; keep lbw=BLOCKS only.")
    te = _strength(named["te"], where) if "te" in named else (numbers[0] if numbers else 1.0)
    unet = numbers[1] if len(numbers) > 1 else None
    if "unet" in named:
        unet = _strength(named["unet"], where)
    return te, (None if unet == te else unet), named.get("lbw", blocks) or None


def _strength(text: str, where: str) -> float:
    if not _FLOAT.fullmatch(text.strip()):
        raise PromptError(f"{where}: the weight '{text}' is not a number.")
    return float(text)


def resolve_lora(name: str, lora_dir: str | Path | None) -> Path:
    """The network file a `<lora:name>` tag means: a path, or a file stem under `lora_dir`."""
    direct = Path(name).expanduser()
    if direct.is_file():
        return direct
    if lora_dir is None:
        raise PromptError(
            f"<lora:{name}>: no such file, and no LoRA folder was given to look it up in. "
            "Pass the folder holding your LoRA files (--lora-dir)."
        )
    folder = Path(lora_dir)
    if not folder.is_dir():
        raise PromptError(f"LoRA folder {folder} does not exist.")
    files = [p for p in folder.rglob("*") if p.suffix.lower() in NETWORK_SUFFIXES and p.is_file()]
    for match in (lambda p: p.stem == name, lambda p: p.stem.lower() == name.lower()):
        found = sorted(p for p in files if match(p))
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            listing = ", ".join(str(p) for p in found)
            raise PromptError(f"<lora:{name}> matches several files: {listing}. Rename one or give a path.")
    close = difflib.get_close_matches(name, sorted({p.stem for p in files}), n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise PromptError(f"<lora:{name}>: no file named {name}.safetensors (or .pt/.ckpt) under {folder}.{hint}")


def parse_lora_option(text: str) -> LoraRef:
    """`--lora FILE[:TE[:UNET]][:BLOCKS]`, with the tag's named forms too (`FILE:unet=0.5`). FILE
    may contain ':' (Windows drive), so the split is decided by which prefix is an existing file."""
    if Path(text).is_file():
        return LoraRef(Path(text))
    pieces = text.split(":")
    for cut in range(len(pieces) - 1, 0, -1):
        head = ":".join(pieces[:cut])
        if Path(head).is_file():
            weight, unet, blocks = lora_strengths(pieces[cut:], f"--lora {text}")
            return LoraRef(Path(head), weight, blocks, unet)
    raise PromptError(
        f"--lora {text}: the file does not exist. Write FILE, FILE:WEIGHT, FILE:TE:UNET or "
        "FILE:WEIGHT:BLOCKS."
    )
