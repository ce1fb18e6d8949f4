"""Job kinds: what a submission may contain, checked, and the `lorakit` argument list it runs.

A training (`train`, `lr-find`) is submitted as its TOML config, stored as sent (plus an
`output_dir = "runs/NAME"` line when the config leaves output_dir unset) and run as
`lorakit train jobs/ID/config.toml`. Every other kind is submitted as `args`, a table of the
command's own options (`{"lora": "runs/a/a.safetensors", "new-rank": 8, "out": "models/a8.safetensors"}`);
only the options listed here are accepted, each of its type, every path checked against the
roots, and each becomes one `--name=value` argument (the `=` form, so a value can never be read
as another option). Nothing is ever joined into a shell command.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..data.tagging import FLORENCE_TASKS
from ..data.tagging.models import known_model
from ..training.config import TrainConfig, load_config, read_toml, toml_value
from .errors import Refused, WebError
from .security import location_of, resolve_user_path
from .workspace import Workspace

# Training options that hold paths (checked against the roots; "auto" is not a path for resume).
CONFIG_PATHS = (
    "pretrained_model_name_or_path",
    "vae",
    "train_data_dir",
    "reg_data_dir",
    "dataset_config",
    "in_json",
    "network_weights",
    "sample_prompts",
    "output_dir",
    "logging_dir",
    "resume",
)
CONFIG_PATH_LISTS = ("base_weights",)
SUBSET_PATHS = ("image_dir", "metadata_file", "conditioning_data_dir")

# Option types: path (an existing file or folder), folder (an existing folder), out (a file or
# folder to write), lora (FILE[:WEIGHT[:BLOCKS]], repeatable), model (a tagger or captioner: a
# folder inside the roots, a known name or a hub repo id), ext (a file extension), text, int,
# float, flag (true/false), axis (grid axes).
MODEL = {"model": "path", "vae": "path", "v_parameterization": "flag", "device": "text", "precision": "text"}
GENERATION = {
    "prompt": "prompt",
    "prompts": "path",
    "negative": "text",
    "lora": "lora",
    "lora-dir": "path",
    "sampler": "text",
    "steps": "int",
    "cfg": "float",
    "seed": "int",
    "width": "int",
    "height": "int",
    "clip-skip": "int",
}
# `lorakit tag` / `lorakit caption` (sd-scripts' option names, with underscores)
FOLDER_RUN = {
    "folder": "folder",
    "model": "model",
    "model_dir": "folder",
    "caption_extension": "ext",
    "recursive": "flag",
    "batch_size": "int",
    "device": "text",
    "dry-run": "flag",
}
THRESHOLDS = ("general", "character", "copyright", "artist", "meta", "model")
ARGS: dict[str, dict[str, str]] = {
    "tag": {
        **FOLDER_RUN,
        "thresh": "float",
        **{f"{c}_threshold": "float" for c in THRESHOLDS},
        "mcut": "flag",
        "undesired_tags": "text",
        "always_first_tags": "text",
        "character_tags_first": "flag",
        "use_rating_tags": "flag",
        "use_rating_tags_as_last_tag": "flag",
        "use_quality_tags": "flag",
        "use_quality_tags_as_last_tag": "flag",
        "remove_underscore": "flag",
        "character_tag_expand": "flag",
        "tag_replacement": "text",
        "sort_by_score": "flag",
        "caption_separator": "text",
        "append_tags": "flag",
        "frequency_tags": "flag",
        "output_path": "out",
        "threads": "int",
    },
    "caption": {
        **FOLDER_RUN,
        "prefix": "text",
        "suffix": "text",
        "task": "text",
        "prompt": "text",
        "beam_search": "flag",
        "sample": "flag",
        "num_beams": "int",
        "top_p": "float",
        "max_length": "int",
        "min_length": "int",
        "seed": "int",
        "fp32": "flag",
    },
    "lr-find": {"steps": "int", "optimizer": "text"},
    "grid": {
        "run": "path",
        **MODEL,
        **GENERATION,
        "x": "axis",
        "y": "axis",
        "z": "axis",
        "weight": "float",
        "font-size": "int",
        "out": "out",
    },
    "generate": {**MODEL, **GENERATION, "batch": "int", "out": "out"},
    "merge": {
        "lora": "lora",
        "out": "out",
        "model": "path",
        "to": "text",
        "precision": "text",
        "concat": "flag",
        "new-rank": "int",
        "new-conv-rank": "int",
        "same-to-strength": "flag",
        "clamp-quantile": "float",
        "device": "text",
    },
    "resize": {
        "lora": "path",
        "out": "out",
        "new-rank": "int",
        "new-conv-rank": "int",
        "dynamic": "text",
        "dynamic-param": "float",
        "precision": "text",
        "device": "text",
    },
    "extract": {
        "base": "path",
        "tuned": "path",
        "out": "out",
        "dim": "int",
        "conv-dim": "int",
        "clamp-quantile": "float",
        "min-diff": "float",
        "precision": "text",
        "device": "text",
    },
    "inspect": {"file": "path", "v_parameterization": "flag", "json": "flag"},
    "convert": {
        "input": "path",
        "output": "out",
        "to": "text",
        "precision": "text",
        "vae": "path",
        "v_parameterization": "flag",
    },
}
POSITIONAL = {
    "resize": ("lora",),
    "convert": ("input", "output"),
    "inspect": ("file",),
    "tag": ("folder",),
    "caption": ("folder",),
}
REQUIRED = {
    "tag": ("folder",),
    "caption": ("folder",),
    "grid": (),
    "generate": ("out",),
    "merge": ("lora", "out"),
    "resize": ("lora", "out", "new-rank"),
    "extract": ("base", "tuned", "out", "dim"),
    "convert": ("input", "output"),
    "inspect": ("file",),
    "lr-find": (),
}
# values the command accepts, checked here so that a wrong one is refused before it is queued
CHOICES = {
    ("tag", "device"): ("auto", "cpu", "cuda"),
    ("caption", "device"): ("auto", "cpu", "cuda"),
    ("caption", "task"): FLORENCE_TASKS,
}
# (smallest, largest) a number may be; None: no bound
LIMITS = {
    "batch_size": (1, 4096),
    "threads": (1, 1024),
    "num_beams": (1, 64),
    "max_length": (1, 4096),
    "min_length": (0, 4096),
    "top_p": (0, 1),
    "thresh": (0, None),
    **{f"{c}_threshold": (0, None) for c in THRESHOLDS},
}
ONE_OF = {"caption": (("beam_search", "sample"),)}  # options that exclude each other
CONFIG_KINDS = ("train", "lr-find")
KINDS = (*CONFIG_KINDS, *(k for k in ARGS if k not in CONFIG_KINDS))
_NUMBER = re.compile(r"^-?\d+(\.\d+)?$")
_EXTENSION = re.compile(r"^\.?[A-Za-z0-9_-]{1,16}(\.[A-Za-z0-9_-]{1,16})?$")
_REPO_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?"
_REPO_ID = re.compile(rf"^{_REPO_PART}(?:/{_REPO_PART}){{1,2}}$")  # owner/name[/subfolder]


@dataclass
class JobSpec:
    """A checked submission, ready for the queue."""

    kind: str
    name: str
    args: list[str]  # after `lorakit KIND` (for trainings: after the config file)
    config: str | None = None  # the TOML (trainings)
    output_dir: Path | None = None
    output_name: str | None = None


def prepare(
    workspace: Workspace, kind: str, toml_text: str | None, args: dict | None, name: str | None
) -> JobSpec:
    if kind not in KINDS:
        raise WebError(f"unknown job kind {kind!r}; one of: {', '.join(KINDS)}.")
    if kind in CONFIG_KINDS:
        if not isinstance(toml_text, str) or not toml_text.strip():
            raise WebError(f"a {kind} job needs 'config': the training TOML as text.")
        spec = prepare_training(workspace, kind, toml_text, name)
        spec.args = option_args(workspace, kind, args or {})
        return spec
    if toml_text is not None:
        raise WebError(f"a {kind} job takes 'args' (its command's options), not 'config'.")
    argv = option_args(workspace, kind, args or {})
    out = _output_of(workspace, kind, args or {})
    shown = out.name if out else Path(str((args or {}).get("file") or "")).name
    if kind in ("tag", "caption"):
        shown = location_of(out, workspace.roots()) or shown
    return JobSpec(kind, name or f"{kind} {shown}".strip(), argv, None, out)


# -- trainings -------------------------------------------------------------------------------


def read_training(workspace: Workspace, text: str) -> TrainConfig:
    """`load_config` on the text (through a temporary file in the workspace)."""
    with tempfile.TemporaryDirectory(dir=workspace.root / "jobs", prefix=".incoming-") as folder:
        path = Path(folder) / "config.toml"
        path.write_text(text, encoding="utf-8")
        config = load_config(path)
        config.path = None
        return config


def prepare_training(workspace: Workspace, kind: str, text: str, name: str | None) -> JobSpec:
    config = read_training(workspace, text)
    roots = workspace.roots()
    if not config.pretrained_model_name_or_path:
        raise WebError("the config sets no pretrained_model_name_or_path: name the base model file.")
    if kind == "train" and not (config.train_data_dir or config.dataset_config or config.dataset):
        raise WebError(
            "the config names no pictures: set train_data_dir (a folder of N_name folders) or dataset_config."
        )
    if config.origin["output_dir"] == "default" and kind == "train":
        folder = f"runs/{config.output_name}"
        text = f"output_dir = {toml_value(folder)}  # set by lorakit ui: the run's folder\n" + text
        config.set("output_dir", folder, "lorakit ui")
    for option in CONFIG_PATHS:
        value = config.values.get(option)
        if value in (None, "") or (option == "resume" and value == "auto"):
            continue
        _checked(value, roots, option, must_exist=option not in ("output_dir", "logging_dir"))
    for option in CONFIG_PATH_LISTS:
        for item in config.values.get(option) or []:
            _checked(str(item).rsplit(":", 1)[0] if _weighted(str(item)) else str(item), roots, option)
    if config.dataset:
        check_dataset_paths(config.dataset, workspace, workspace.root, "the config's [[datasets]]")
    if config.dataset_config:
        file = resolve_user_path(config.dataset_config, roots)
        check_dataset_paths(read_toml(file), workspace, file.parent, str(config.dataset_config))
    output_dir = resolve_user_path(config.output_dir, roots)
    return JobSpec(kind, name or config.output_name, [], text, output_dir, config.output_name)


def _weighted(item: str) -> bool:
    return ":" in item and bool(_NUMBER.match(item.rsplit(":", 1)[1]))


def _checked(value: str, roots: dict[str, Path], what: str, must_exist: bool = True) -> Path:
    try:
        path = resolve_user_path(str(value), roots)
    except Refused as e:
        raise Refused(f"{what}: {e}") from None
    if must_exist and not path.exists():
        raise WebError(f"{what}: {value} does not exist (looked for {path}).")
    return path


def check_dataset_paths(data: Any, workspace: Workspace, beside: Path, source: str) -> None:
    """image_dir / metadata_file / conditioning_data_dir of every subset, resolved as the data
    library does from the job's folder (the workspace): there first, else beside the file."""
    roots = workspace.roots()
    tables = [data.get("general") or {}] if isinstance(data, dict) else []
    for dataset in (data.get("datasets") or []) if isinstance(data, dict) else []:
        if isinstance(dataset, dict):
            tables.append(dataset)
            tables += [s for s in dataset.get("subsets") or [] if isinstance(s, dict)]
    for table in tables:
        for key in SUBSET_PATHS:
            value = table.get(key)
            if not isinstance(value, str):
                continue
            if (
                not value.startswith("/")
                and not (workspace.root / value).exists()
                and (beside / value).exists()
            ):
                value = str(beside / value)
            try:
                resolve_user_path(value, roots)
            except Refused as e:
                raise Refused(f"{source}: {key}: {e}") from None


# -- other commands ------------------------------------------------------------------------------


def option_args(workspace: Workspace, kind: str, args: dict) -> list[str]:
    """The checked `args` table as `--name=value` arguments (positionals first, as paths)."""
    if not isinstance(args, dict):
        raise WebError("'args' must be a table of option names and values.")
    allowed = ARGS.get(kind, {})
    unknown = sorted(set(args) - set(allowed))
    if unknown:
        known = ", ".join(allowed) or "none (put the settings in the config)"
        raise WebError(f"{kind}: unknown option(s) {', '.join(unknown)}; this kind takes: {known}.")
    missing = [k for k in REQUIRED.get(kind, ()) if args.get(k) in (None, "", [], False)]
    if missing:
        raise WebError(f"{kind}: {', '.join(missing)} must be given.")
    for group in ONE_OF.get(kind, ()):
        given = [k for k in group if args.get(k) not in (None, False)]
        if len(given) > 1:
            raise WebError(f"{kind}: {' and '.join(given)} exclude each other; give one of them.")
    roots = workspace.roots()
    positional, options = [], []
    for key, value in args.items():
        if value is None or value is False:
            continue
        values = [str(v) for v in _typed(kind, key, allowed[key], value, roots)]
        if key in POSITIONAL.get(kind, ()):
            positional += values
        elif allowed[key] == "flag":
            options.append(f"--{key}")
        else:
            options += [f"--{key}={v}" for v in values]
    return positional + options


def _typed(kind: str, key: str, kind_of: str, value: Any, roots: dict[str, Path]) -> list[Any]:
    where = f"{kind}: {key}"
    if kind_of == "lora":
        items = value if isinstance(value, list) else [value]
        return [_lora(str(item), roots, where) for item in items]
    if isinstance(value, (list, dict)):
        raise WebError(f"{where}: one value expected, got {type(value).__name__}.")
    if kind_of == "flag":
        if value is not True:
            raise WebError(f"{where}: true or false expected, got {value!r}.")
        return [True]
    if kind_of in ("int", "float"):
        ok = isinstance(value, int) if kind_of == "int" else isinstance(value, (int, float))
        if not ok or isinstance(value, bool):
            raise WebError(f"{where}: a number expected ({kind_of}), got {value!r}.")
        low, high = LIMITS.get(key, (None, None)) if kind in ("tag", "caption") else (None, None)
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = f"at least {low}" if high is None else f"from {low} to {high}"
            raise WebError(f"{where}: {value!r} is out of range; give a number {bounds}.")
        return [value]
    text = str(value)
    if "\x00" in text:
        raise WebError(f"{where}: NUL bytes are not allowed.")
    choices = CHOICES.get((kind, key))
    if choices and text not in choices:
        raise WebError(f"{where}: {text!r} is not one of {', '.join(choices)}.")
    if kind_of == "path":
        return [_checked(text, roots, where)]
    if kind_of == "folder":
        path = _checked(text, roots, where)
        if not path.is_dir():
            raise WebError(f"{where}: {text} is a file; give a folder.")
        return [path]
    if kind_of == "model":
        return [_model(text, roots, where)]
    if kind_of == "ext":
        if not _EXTENSION.match(text):
            raise WebError(f"{where}: {text!r} is not a file extension; write it like .txt or .caption.")
        return [text if text.startswith(".") else "." + text]
    if kind_of == "out":
        return [_checked(text, roots, where, must_exist=False)]
    if kind_of == "axis" and text.split("=", 1)[0].strip().lower() == "lora":
        raise WebError(
            f"{where}: lora axes name files, which the API does not take here; use 'run' for a run's epochs."
        )
    if kind_of == "prompt" and re.search(r"<lora:[^>]*(/|\\|\.\.)", text):
        raise WebError(f"{where}: <lora:NAME> takes a file name from lora-dir, not a path.")
    return [text]


def _lora(item: str, roots: dict[str, Path], where: str) -> str:
    """FILE[:WEIGHT[:BLOCKS]] with FILE checked; returned with FILE absolute."""
    parts = item.split(":")
    for cut in range(len(parts), 0, -1):
        head, tail = ":".join(parts[:cut]), parts[cut:]
        if len(tail) > 2 or (tail and not _NUMBER.match(tail[0])):
            continue
        path = _checked(head, roots, where, must_exist=False)
        if path.is_file() or cut == 1:
            if not path.is_file():
                raise WebError(f"{where}: {head} does not exist (looked for {path}).")
            return ":".join([str(path), *tail])
    raise WebError(f"{where}: {item!r}: write FILE, FILE:WEIGHT or FILE:WEIGHT:BLOCKS.")


def _model(text: str, roots: dict[str, Path], where: str) -> str:
    """A tagger or captioner as `lorakit tag/caption --model` takes it. A known name or a hub
    repo id goes to the command as written: it looks in --model_dir and the Hugging Face cache,
    downloads when online, and when offline says which files to fetch. Anything written like a
    path (absolute, @NAME/..., or starting with a folder of the workspace) must be a folder inside
    the roots, and is passed as its absolute path."""
    if known_model(text):
        return text
    looks_like_path = text.startswith(("/", "@", ".", "~")) or _in_workspace(roots[""], text.split("/")[0])
    if not looks_like_path and _REPO_ID.match(text) and ".." not in text:
        return text
    if not looks_like_path:
        raise WebError(
            f"{where}: {text!r} is not a model; give a folder inside the workspace, a name from "
            "'lorakit tag --list-models' or a Hugging Face repo id (owner/name)."
        )
    path = _checked(text, roots, where)
    if not path.is_dir():
        raise WebError(f"{where}: {text} is a file; give the folder that holds the model's files.")
    return str(path)


def _in_workspace(root: Path, name: str) -> bool:
    try:
        return (root / name).exists()
    except (OSError, ValueError):  # a name too long for the file system
        return False


def _output_of(workspace: Workspace, kind: str, args: dict) -> Path | None:
    """The folder a job writes into (shown with the job; its files are listed from there)."""
    roots = workspace.roots()
    if kind == "grid":
        if args.get("out"):
            return resolve_user_path(str(args["out"]), roots)
        return resolve_user_path(str(args["run"]), roots) / "grid" if args.get("run") else None
    if kind in ("tag", "caption"):
        return resolve_user_path(str(args["folder"]), roots)
    target = args.get("output") if kind == "convert" else args.get("out")
    if not target:
        return None
    path = resolve_user_path(str(target), roots)
    return path if kind in ("generate", "convert") and not path.suffix else path.parent
