"""The taggers and captioners lorakit knows, and finding a model's files without surprises.

`--model` takes a folder (what a user downloaded), a short name from `KNOWN_MODELS`, or a hub
repo id. A name or repo id is looked up, in order, in `--model_dir` (sd-scripts'
`wd14_tagger_model` layout: `MODEL_DIR/owner_name/`, so a folder sd-scripts downloaded is used as
it is), in the Hugging Face cache, and then downloaded into that cache when the machine is online
(`HF_HUB_OFFLINE` respected). Offline and without the files, the error names the files and the
folder to put them in, instead of a network error.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import constants as hf_constants
from huggingface_hub import hf_hub_download, snapshot_download, try_to_load_from_cache
from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

from ...errors import ModelError

# files a tagger folder needs: one model file and one label file
TAGGER_MODEL_FILES = ("model.onnx", "model_optimized.onnx")
TAGGER_LABEL_FILES = ("selected_tags.csv", "tag_mapping.json")
# what transformers reads from a captioner folder (weights: either name)
CAPTIONER_FILES = ("config.json", "model.safetensors", "preprocessor_config.json", "tokenizer files")
DEFAULT_MODEL_DIR = Path.home() / ".cache" / "lorakit" / "models"


class ModelFilesMissing(ModelError):
    """A model that is neither on disk nor downloadable now; the message says what to fetch."""


@dataclass(frozen=True)
class KnownModel:
    name: str  # short name accepted by --model
    repo_id: str  # owner/name, or owner/name/subfolder (sd-scripts' form for cl_tagger)
    kind: str  # "wd14" or a captioner kind
    size: str  # download size, roughly
    licence: str
    files: tuple[str, ...]
    note: str = ""


_SW = ("model.onnx", "selected_tags.csv")
_HF = (
    "config.json",
    "model.safetensors",
    "preprocessor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
)
KNOWN_MODELS = (
    KnownModel("wd-v1-4-convnext-tagger-v2", "SmilingWolf/wd-v1-4-convnext-tagger-v2", "wd14", "≈ 390 MB", "Apache-2.0", _SW, "default: sd-scripts' default tagger"),
    KnownModel("wd-v1-4-convnextv2-tagger-v2", "SmilingWolf/wd-v1-4-convnextv2-tagger-v2", "wd14", "≈ 390 MB", "Apache-2.0", _SW),
    KnownModel("wd-v1-4-vit-tagger-v2", "SmilingWolf/wd-v1-4-vit-tagger-v2", "wd14", "≈ 380 MB", "Apache-2.0", _SW),
    KnownModel("wd-v1-4-swinv2-tagger-v2", "SmilingWolf/wd-v1-4-swinv2-tagger-v2", "wd14", "≈ 470 MB", "Apache-2.0", _SW),
    KnownModel("wd-v1-4-moat-tagger-v2", "SmilingWolf/wd-v1-4-moat-tagger-v2", "wd14", "≈ 330 MB", "Apache-2.0", _SW),
    KnownModel("wd-convnext-tagger-v3", "SmilingWolf/wd-convnext-tagger-v3", "wd14", "≈ 390 MB", "Apache-2.0", _SW),
    KnownModel("wd-vit-tagger-v3", "SmilingWolf/wd-vit-tagger-v3", "wd14", "≈ 380 MB", "Apache-2.0", _SW),
    KnownModel("wd-swinv2-tagger-v3", "SmilingWolf/wd-swinv2-tagger-v3", "wd14", "≈ 470 MB", "Apache-2.0", _SW),
    KnownModel("wd-vit-large-tagger-v3", "SmilingWolf/wd-vit-large-tagger-v3", "wd14", "≈ 1.3 GB", "Apache-2.0", _SW),
    KnownModel("wd-eva02-large-tagger-v3", "SmilingWolf/wd-eva02-large-tagger-v3", "wd14", "≈ 1.3 GB", "Apache-2.0", _SW),
    KnownModel(
        "cl_tagger_1_02", "cella110n/cl_tagger/cl_tagger_1_02", "wd14", "≈ 1.4 GB", "see the model card",
        ("model_optimized.onnx", "tag_mapping.json"), "tag_mapping.json layout",
    ),
    KnownModel("blip-large", "Salesforce/blip-image-captioning-large", "blip", "≈ 1.9 GB", "BSD-3-Clause", _HF, "default captioner"),
    KnownModel("blip-base", "Salesforce/blip-image-captioning-base", "blip", "≈ 1.0 GB", "BSD-3-Clause", _HF),
    KnownModel("florence-2-base", "florence-community/Florence-2-base", "florence2", "≈ 0.9 GB", "MIT", _HF),
    KnownModel("florence-2-large", "florence-community/Florence-2-large", "florence2", "≈ 3.1 GB", "MIT", _HF),
    KnownModel("git-base-coco", "microsoft/git-base-coco", "git", "≈ 0.7 GB", "MIT", _HF),
    KnownModel("git-large-coco", "microsoft/git-large-coco", "git", "≈ 1.6 GB", "MIT", _HF),
)  # fmt: skip
DEFAULT_TAGGER = "wd-v1-4-convnext-tagger-v2"
DEFAULT_CAPTIONER = "blip-large"


def known_model(name_or_repo: str) -> KnownModel | None:
    for m in KNOWN_MODELS:
        if name_or_repo in (m.name, m.repo_id):
            return m
    return None


def format_model_list() -> str:
    """The table `lorakit tag --list-models` prints."""
    rows = [("name", "kind", "repo id", "size", "licence", "")]
    rows += [(m.name, m.kind, m.repo_id, m.size, m.licence, m.note) for m in KNOWN_MODELS]
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(r[:5], widths)) + ("  " + r[5] if r[5] else "") for r in rows
    ]
    return "\n".join(line.rstrip() for line in lines)


def _is_offline() -> bool:
    return bool(hf_constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "").lower() in (
        "1",
        "true",
        "yes",
        "on",
    )


def _split_repo(repo: str) -> tuple[str, str | None]:
    """sd-scripts' `owner/name/subfolder` -> ("owner/name", "subfolder")."""
    parts = repo.strip("/").split("/")
    return "/".join(parts[:2]), ("/".join(parts[2:]) or None)


def kohya_folder(model_dir: Path, repo: str) -> Path:
    """Where sd-scripts keeps a downloaded tagger: `model_dir/owner_name[/subfolder]`."""
    repo_id, sub = _split_repo(repo)
    folder = Path(model_dir) / repo_id.replace("/", "_")
    return folder / sub if sub else folder


def tagger_files(folder: Path) -> tuple[Path, Path] | None:
    """(model file, label file) in `folder`, or None when one is missing."""
    model = next((folder / f for f in TAGGER_MODEL_FILES if (folder / f).is_file()), None)
    if model is None:
        others = sorted(folder.glob("*.onnx")) if folder.is_dir() else []
        model = others[0] if len(others) == 1 else None
    labels = next((folder / f for f in TAGGER_LABEL_FILES if (folder / f).is_file()), None)
    return (model, labels) if model and labels else None


def _looks_like_path(spec: str) -> bool:
    """A folder on disk, or written like one; anything else is a short name or a repo id."""
    return (
        spec.startswith((".", "/", "~", "\\")) or Path(spec).is_absolute() or Path(spec).expanduser().exists()
    )


def _missing(what: str, repo: str, files: tuple[str, ...], folder: Path, why: str) -> ModelFilesMissing:
    repo_id, sub = _split_repo(repo)
    where = f"https://huggingface.co/{repo_id}" + (f" (folder {sub})" if sub else "")
    return ModelFilesMissing(
        f"{what} {repo} is not on this machine and {why}. Download {_and(files)} from {where} "
        f"into {folder} (lorakit looks there), or into any folder and pass it as --model FOLDER."
    )


def _and(items: tuple[str, ...]) -> str:
    return ", ".join(items[:-1]) + " and " + items[-1] if len(items) > 1 else "".join(items)


def _offline_reason() -> str:
    return "the machine is offline (HF_HUB_OFFLINE is set)"


def locate_tagger(spec: str | None = None, model_dir: str | Path | None = None) -> Path:
    """The folder holding a tagger's model file and tag list: `spec` itself when it is a folder,
    else `model_dir/owner_name`, the Hugging Face cache, or a download into that cache."""
    spec = spec or DEFAULT_TAGGER
    if _looks_like_path(spec):
        folder = Path(spec).expanduser()
        if not folder.is_dir():
            raise ModelFilesMissing(
                f"{folder}: folder not found. Give the folder that holds model.onnx and selected_tags.csv."
            )
        if tagger_files(folder) is None:
            raise ModelFilesMissing(
                f"{folder} does not hold a tagger: it needs a model file ({' or '.join(TAGGER_MODEL_FILES)}) "
                f"and a tag list ({' or '.join(TAGGER_LABEL_FILES)}) side by side."
            )
        return folder
    known = known_model(spec)
    repo = known.repo_id if known else spec
    files = known.files if known else _SW
    target = kohya_folder(Path(model_dir) if model_dir else DEFAULT_MODEL_DIR, repo)
    if tagger_files(target) is not None:
        return target
    repo_id, sub = _split_repo(repo)
    cached = [try_to_load_from_cache(repo_id, f"{sub}/{f}" if sub else f) for f in files]
    if all(isinstance(c, str) for c in cached):
        return Path(cached[0]).parent
    if _is_offline():
        raise _missing("the tagger", repo, files, target, _offline_reason())
    try:
        paths = [Path(hf_hub_download(repo_id, f, subfolder=sub)) for f in files]
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError) as e:
        raise _missing("the tagger", repo, files, target, f"downloading it failed ({e})") from None
    return paths[0].parent


def locate_captioner(spec: str | None = None, model_dir: str | Path | None = None) -> Path:
    """The folder of a transformers captioner (config.json, weights, processor and tokenizer
    files), found as `locate_tagger` finds a tagger."""
    spec = spec or DEFAULT_CAPTIONER
    if _looks_like_path(spec):
        folder = Path(spec).expanduser()
        if not (folder / "config.json").is_file():
            raise ModelFilesMissing(
                f"{folder} does not hold a captioner: it needs {', '.join(CAPTIONER_FILES)} "
                "(the files of the model's Hugging Face repository)."
            )
        return folder
    known = known_model(spec)
    repo = known.repo_id if known else spec
    files = known.files if known else _HF
    target = kohya_folder(Path(model_dir) if model_dir else DEFAULT_MODEL_DIR, repo)
    if (target / "config.json").is_file():
        return target
    try:
        folder = Path(snapshot_download(repo, allow_patterns=_WANTED, local_files_only=_is_offline()))
        if not any(folder.glob("*.safetensors")) and not _is_offline():
            folder = Path(snapshot_download(repo, allow_patterns=[*_WANTED, "pytorch_model*.bin"]))
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError) as e:
        why = _offline_reason() if _is_offline() else f"downloading it failed ({e})"
        raise _missing("the captioner", repo, files, target, why) from None
    if not (folder / "config.json").is_file():
        raise _missing(
            "the captioner",
            repo,
            files,
            target,
            _offline_reason() if _is_offline() else "its files are incomplete",
        )
    return folder


# what a captioner download fetches: configs, tokenizer files, safetensors weights (not the
# TensorFlow/Flax copies some repositories also hold)
_WANTED = ["*.json", "*.txt", "*.model", "*.safetensors"]
