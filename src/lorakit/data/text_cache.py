"""Text-encoder outputs computed once per caption, when the encoders are frozen and every caption
is the same at every step.

The data layer does not know how to run the text encoders (tokenizer, clip skip, token length
belong to the model): the caller passes `encode(captions) -> {name: tensor with batch first}` and
an `encoder_id` string that changes whenever the encoders or those settings change. On disk the
outputs go to sd-scripts' `<img>_te_outputs.npz` (its SDXL keys are hidden_state1,
hidden_state2 and pool2; use those names in `encode` for files sd-scripts can read too), with a
`lorakit_key` that ties the file to the caption and the encoders.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import DatasetError
from ..utils.files import atomic_path
from .captions import process_caption
from .dataset import DatasetGroup
from .latent_cache import CacheStats

KEY_NAME = "lorakit_key"


@dataclass
class TextEntry:
    memory: dict[str, np.ndarray] | None = None
    path: Path | None = None

    def load(self) -> dict[str, np.ndarray]:
        if self.memory is not None:
            return self.memory
        with np.load(self.path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files if k != KEY_NAME}


def te_npz_path(image: Path) -> Path:
    return image.with_name(image.stem + "_te_outputs.npz")


def changing_caption_options(group: DatasetGroup) -> list[str]:
    """Subsets whose captions can differ from step to step, with the options responsible."""
    out = []
    for ds in group.datasets:
        for s in ds.config.subsets:
            opts = [
                name
                for name, on in (
                    ("shuffle_caption", s.shuffle_caption),
                    ("caption_dropout_rate", s.caption_dropout_rate > 0),
                    ("caption_dropout_every_n_epochs", s.caption_dropout_every_n_epochs > 0),
                    ("caption_tag_dropout_rate", s.caption_tag_dropout_rate > 0),
                    ("token_warmup_step", s.token_warmup_step > 0),
                    ("enable_wildcard", s.enable_wildcard),
                )
                if on
            ]
            if opts:
                out.append(f"{s.name}: {', '.join(opts)}")
    return out


def static_caption(group: DatasetGroup, d: int, i: int) -> str:
    record = group.datasets[d].records[i]
    return process_caption(record.caption, record.subset, random.Random(0))


def cache_text_outputs(
    group: DatasetGroup,
    encode: Callable[[list[str]], dict[str, torch.Tensor]],
    encoder_id: str,
    *,
    to_disk: bool = False,
    batch_size: int = 8,
) -> CacheStats:
    """Run `encode` once per distinct caption and attach the outputs to `group.text_outputs`."""
    changing = changing_caption_options(group)
    if changing:
        raise DatasetError(
            "text-encoder outputs can be cached only when every caption stays the same; these options "
            "change captions at each step:\n  " + "\n  ".join(changing) + "\nTurn them off, or do not cache "
            "text-encoder outputs."
        )
    stats = CacheStats()
    wanted: dict[str, list[tuple[int, int, Path | None, str]]] = {}
    for d, i, r in group.records():
        caption = static_caption(group, d, i)
        key = hashlib.sha256(f"{encoder_id}\n{caption}".encode()).hexdigest()
        path = te_npz_path(r.path) if to_disk else None
        if path is not None and _valid(path, key):
            group.text_outputs[(d, i)] = TextEntry(path=path)
            stats.reused += 1
            continue
        wanted.setdefault(caption, []).append((d, i, path, key))
    captions = list(wanted)
    for k in range(0, len(captions), batch_size):
        chunk = captions[k : k + batch_size]
        with torch.no_grad():
            outputs = encode(chunk)
        for j, caption in enumerate(chunk):
            arrays = {name: t[j].detach().float().cpu().numpy() for name, t in outputs.items()}
            stats.encoded += 1
            for d, i, path, key in wanted[caption]:
                if path is None:
                    group.text_outputs[(d, i)] = TextEntry(memory=arrays)
                    continue
                with atomic_path(path) as tmp, open(tmp, "wb") as f:
                    np.savez(f, **arrays, **{KEY_NAME: np.array(key)})
                stats.written += 1
                group.text_outputs[(d, i)] = TextEntry(path=path)
    return stats


def _valid(path: Path, key: str) -> bool:
    try:
        with np.load(path, allow_pickle=False) as f:
            return KEY_NAME in f.files and str(f[KEY_NAME]) == key
    except Exception:
        return False
