"""The CLIP tokenizers, built offline from the BPE vocabulary shipped with lorakit.

`clip_bpe/bpe_simple_vocab_16e6.txt.gz` is OpenAI CLIP's vocabulary (MIT licence, see
`clip_bpe/LICENSE`). From it we write the `vocab.json` and `merges.txt` that transformers reads,
then load them through `from_pretrained(folder)`: that is the path that builds the full tokenizer
in every transformers version (constructing `CLIPTokenizer(vocab_file=...)` directly gives a
three-token tokenizer in transformers 5).

SD1 and SDXL's first encoder pad with the end-of-text token; the OpenCLIP encoders of SD2 and
SDXL's second encoder pad with "!" (id 0).
"""

from __future__ import annotations

import gzip
import json
import tempfile
from functools import cache
from importlib import resources
from pathlib import Path

from transformers import CLIPTokenizer

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
MAX_LENGTH = 77


def _byte_symbols() -> list[str]:
    """The 256 printable stand-ins CLIP's byte-level BPE uses for raw bytes, in id order."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    symbols = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in symbols:
            symbols[b] = chr(256 + extra)
            extra += 1
    return [symbols[b] for b in printable] + [symbols[b] for b in range(256) if b not in printable]


def _write_files(folder: Path) -> None:
    data = resources.files("lorakit.models").joinpath("clip_bpe/bpe_simple_vocab_16e6.txt.gz").read_bytes()
    lines = gzip.decompress(data).decode("utf-8").split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1]  # the slice CLIP itself uses
    byte_symbols = _byte_symbols()
    vocab = (
        byte_symbols + [s + "</w>" for s in byte_symbols] + ["".join(m.split()) for m in merges] + [BOS, EOS]
    )
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": MAX_LENGTH,
        "bos_token": BOS,
        "eos_token": EOS,
        "unk_token": EOS,
        "pad_token": EOS,
        "do_lower_case": True,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config))


@cache
def _load(pad_token: str) -> CLIPTokenizer:
    with tempfile.TemporaryDirectory(prefix="lorakit-tokenizer-") as folder:
        _write_files(Path(folder))
        return CLIPTokenizer.from_pretrained(folder, pad_token=pad_token, local_files_only=True)


def clip_tokenizer(open_clip: bool = False) -> CLIPTokenizer:
    """A fresh copy each call, so a caller changing settings does not affect others."""
    import copy

    return copy.deepcopy(_load("!" if open_clip else EOS))


def write_tokenizer(folder: str | Path, open_clip: bool = False) -> None:
    """Save the tokenizer as a transformers tokenizer folder (for diffusers folders)."""
    clip_tokenizer(open_clip).save_pretrained(str(folder))
