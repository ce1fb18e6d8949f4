"""Textual-inversion files in the layouts A1111, ComfyUI and diffusers load, and the embeddings
A1111 reads from inside a LoRA file.

    SD1/SD2 .safetensors   {"emb_params": [n, width]}                  (sd-scripts; A1111, ComfyUI,
                                                                        diffusers take a single tensor)
    SD1/SD2 .pt            {"string_to_token": {"*": 265}, "string_to_param": {"*": [n, width]},
                            "name", "step", "sd_checkpoint", "sd_checkpoint_name"}   (A1111's own)
    SDXL                   {"clip_l": [n, 768], "clip_g": [n, 1280]}    (one file for both encoders)
    bundled in a LoRA      bundle_emb.NAME.string_to_param.*  or  bundle_emb.NAME.clip_l / .clip_g

A file's embedding is named after the file (A1111: `ohwx.safetensors` is used by the word ohwx).
`.pt` files are read with lorakit's safe unpickler.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..errors import ModelError
from ..utils.files import atomic_path
from .checkpoint_file import PICKLE_SUFFIXES, TensorFile, read_pickle
from .embeddings import Embedding

BUNDLE = "bundle_emb."
STAR_TOKEN = 265  # the CLIP id of "*", A1111's placeholder in string_to_token
SUFFIXES = (".safetensors", ".pt", ".bin")


def layout_tensors(vectors: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """The tensors of one embedding under its file keys: emb_params, or clip_l + clip_g (SDXL)."""
    if len(vectors) == 2:
        return {"clip_l": vectors[0], "clip_g": vectors[1]}
    return {"emb_params": vectors[0]}


def _cast(tensors: Mapping[str, torch.Tensor], dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", dtype or v.dtype).contiguous() for k, v in tensors.items()}


def write_embedding(
    path: str | Path,
    embedding: Embedding,
    dtype: torch.dtype | None = torch.float32,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write `embedding` to `path` atomically: `.pt` in A1111's layout, else safetensors."""
    path = Path(path)
    tensors = _cast(layout_tensors(embedding.vectors), dtype)
    with atomic_path(path) as tmp:
        if path.suffix.lower() in PICKLE_SUFFIXES:
            if len(embedding.vectors) == 1:
                data = {
                    "string_to_token": {"*": STAR_TOKEN},
                    "string_to_param": {"*": tensors["emb_params"]},
                    "name": embedding.name,
                    "step": embedding.step,
                    "sd_checkpoint": embedding.sd_checkpoint,
                    "sd_checkpoint_name": embedding.sd_checkpoint_name,
                }
            else:
                data = tensors
            torch.save(data, tmp)
        else:
            save_file(tensors, str(tmp), metadata={k: str(v) for k, v in (metadata or {}).items()})
    return path


def vectors_from(data: Mapping, source: str) -> list[torch.Tensor]:
    """The vectors of one embedding in any layout A1111 reads (its own `create_embedding_from_data`
    rules): string_to_param, clip_l + clip_g, or a single tensor (emb_params, diffusers' concept)."""
    if "string_to_param" in data:
        params = data["string_to_param"]
        if len(params) != 1:
            raise ModelError(f"{source}: the embedding holds {len(params)} terms; A1111 files hold one.")
        return [_rows(next(iter(params.values())), source)]
    if "clip_l" in data and "clip_g" in data:
        return [_rows(data["clip_l"], source), _rows(data["clip_g"], source)]
    tensors = [v for v in data.values() if isinstance(v, torch.Tensor)]
    if len(tensors) == 1:
        return [_rows(tensors[0], source)]
    keys = ", ".join(list(data)[:4])
    raise ModelError(
        f"{source} is not a textual-inversion embedding (keys: {keys}). lorakit reads emb_params, "
        "string_to_param (A1111 .pt), clip_l + clip_g (SDXL) and single-tensor (diffusers) files."
    )


def _rows(tensor, source: str) -> torch.Tensor:
    if not isinstance(tensor, torch.Tensor) or tensor.dim() not in (1, 2):
        raise ModelError(f"{source}: an embedding's vectors must be a [n, width] tensor.")
    return (tensor[None] if tensor.dim() == 1 else tensor).detach().float()


def read_embedding(path: str | Path) -> Embedding:
    path = Path(path)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        data = read_pickle(path)
        if not isinstance(data, Mapping):
            raise ModelError(f"{path} holds a {type(data).__name__}, not an embedding.")
        extra = {k: data.get(k) for k in ("step", "sd_checkpoint", "sd_checkpoint_name")}
        return Embedding(path.stem, vectors_from(data, str(path)), source=str(path), **extra)
    file = TensorFile(path)
    data = {key: file[key] for key in file}
    if any("." in key for key in data):  # string_to_param.* flattened into safetensors keys
        data = nest(data)
    return Embedding(path.stem, vectors_from(data, str(path)), source=str(path))


def nest(flat: Mapping[str, torch.Tensor]) -> dict:
    """{"string_to_param.*": t} -> {"string_to_param": {"*": t}}: A1111's dotted bundle keys."""
    out: dict = {}
    for key, value in flat.items():
        head, dot, rest = key.partition(".")
        if dot:
            out.setdefault(head, {})[rest] = value
        else:
            out[key] = value
    return out


def read_folder(folder: str | Path) -> tuple[list[Embedding], list[str]]:
    """Every embedding file in `folder` and below (A1111's embeddings folder), and why any file
    was passed over."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelError(f"{folder}: no such embeddings folder.")
    found, skipped = [], []
    for path in sorted(p for p in folder.rglob("*") if p.suffix.lower() in SUFFIXES and p.is_file()):
        try:
            found.append(read_embedding(path))
        except ModelError as e:
            skipped.append(str(e))
    return found, skipped


def load_folder(model, folder: str | Path) -> tuple[list[str], list[str]]:
    """Register every embedding in `folder` that fits `model`: (names loaded, passed over with why),
    as A1111 lists its loaded and skipped embeddings."""
    embeddings, skipped = read_folder(folder)
    loaded = []
    for embedding in embeddings:
        try:
            model.embeddings.add(model, embedding)
            loaded.append(embedding.name)
        except ModelError as e:
            skipped.append(str(e))
    return loaded, skipped


# -- bundled in a LoRA ------------------------------------------------------------------------


def bundle_tensors(embedding: Embedding, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """A1111's keys for an embedding inside a LoRA file."""
    prefix = f"{BUNDLE}{embedding.name}."
    if len(embedding.vectors) == 2:
        tensors = {prefix + "clip_l": embedding.vectors[0], prefix + "clip_g": embedding.vectors[1]}
    else:
        tensors = {prefix + "string_to_param.*": embedding.vectors[0]}
    return _cast(tensors, dtype)


def split_bundles(
    tensors: Mapping[str, torch.Tensor], source: str = "the file"
) -> tuple[dict[str, torch.Tensor], list[Embedding]]:
    """(the LoRA's own tensors, the embeddings bundled with them)."""
    own, bundled = {}, {}
    for key, tensor in tensors.items():
        if key.startswith(BUNDLE):
            name, _, rest = key[len(BUNDLE) :].partition(".")
            bundled.setdefault(name, {})[rest] = tensor
        else:
            own[key] = tensor
    embeddings = [
        Embedding(name, vectors_from(nest(parts), f"{source} (bundled '{name}')"), source=source)
        for name, parts in bundled.items()
    ]
    return own, embeddings
