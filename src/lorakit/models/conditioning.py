"""Captions -> the U-Net's text conditioning, as sd-scripts computes it.

- SD1/SD2: the last hidden state (or `clip_skip` layers from the end, then the final layer norm).
- SDXL: the penultimate hidden states of both encoders, concatenated, without the final layer
  norm; the pooled, projected output of the second encoder goes into the added conditioning with
  the size and crop values.
- Captions longer than 75 tokens (max_token_length 150/225) are encoded in chunks of 75 and the
  chunks joined, keeping one start and one end token.
"""

from __future__ import annotations

import torch

from .model import StableDiffusionModel

CHUNK = 75  # tokens per chunk, without the start and end tokens


def tokenize(
    model: StableDiffusionModel, captions: list[str], max_token_length: int | None = None, pad: bool = True
) -> list[torch.Tensor]:
    """Token ids per tokenizer: [batch, chunks * 77]. pad=False (sd-scripts' no_token_padding):
    [batch, the longest caption's tokens], one chunk of at most 77."""
    length = (max_token_length or CHUNK) + 2
    if model.embeddings:
        captions = [model.embeddings.rewrite(c) for c in captions]
    out = []
    for tokenizer in model.tokenizers:
        if not pad:
            out.append(
                tokenizer(captions, padding="longest", truncation=True, max_length=CHUNK + 2, return_tensors="pt").input_ids
            )
            continue
        ids = tokenizer(
            captions, padding="max_length", truncation=True, max_length=length, return_tensors="pt"
        ).input_ids
        if length > CHUNK + 2:
            ids = _to_chunks(ids, tokenizer)
        out.append(ids)
    return out


def _to_chunks(ids: torch.Tensor, tokenizer) -> torch.Tensor:
    """[B, 2 + n·75] -> [B, n·77]: each chunk of 75 gets a start token and an end token. The end
    token is the sequence's own last token (end or padding) unless the text runs on past the
    chunk, then it is an end token; a chunk of padding only starts with an end token."""
    bos, eos, pad = tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id
    body, last = ids[:, 1:-1], ids[:, -1:]
    chunks = []
    for start in range(0, body.shape[1], CHUNK):
        chunk = torch.cat([torch.full_like(last, bos), body[:, start : start + CHUNK], last], dim=1)
        runs_on = (chunk[:, -2] != eos) & (chunk[:, -2] != pad)
        chunk[runs_on, -1] = eos
        chunk[chunk[:, 1] == pad, 1] = eos
        chunks.append(chunk)
    return torch.cat(chunks, dim=1)


def layers(model: StableDiffusionModel, clip_skip: int | None = None) -> list[tuple[int | None, bool]]:
    """(hidden-state layer, final layer norm?) per text encoder: SD1/SD2 the last layer, or
    `clip_skip` layers from the end through the final norm; SDXL the penultimate of both, no norm."""
    if model.family.is_xl:
        return [(-2, False), (-2, False)]
    return [(None if not clip_skip or clip_skip <= 1 else -clip_skip, True)]


def hidden_states(encoder, ids: torch.Tensor, layer: int | None, final_norm: bool):
    """(hidden states of `layer` (negative index; None = last) for [N, 77] ids, the encoder's
    output, which holds SDXL's pooled `text_embeds`)."""
    out = encoder(ids.to(encoder.device), output_hidden_states=layer is not None)
    if layer is None:
        return out.last_hidden_state, out
    hidden = out.hidden_states[layer]
    if final_norm:
        norm = getattr(encoder, "text_model", encoder).final_layer_norm
        hidden = norm(hidden)
    return hidden, out


def _run(encoder, ids: torch.Tensor, layer: int | None, final_norm: bool):
    """Hidden states of `layer` for [B, n·77] ids, chunks joined sd-scripts' way."""
    batch, total = ids.shape
    if total % (CHUNK + 2):  # not padded (no_token_padding): one sequence as long as the longest caption
        hidden, out = hidden_states(encoder, ids, layer, final_norm)
        return hidden, out, 1
    chunks = total // (CHUNK + 2)
    hidden, out = hidden_states(encoder, ids.reshape(batch * chunks, CHUNK + 2), layer, final_norm)
    hidden = hidden.reshape(batch, chunks * (CHUNK + 2), -1)
    if chunks > 1:  # keep the first start token, the middle of every chunk, and the last end token
        parts = [hidden[:, :1]]
        for i in range(chunks):
            parts.append(hidden[:, i * (CHUNK + 2) + 1 : (i + 1) * (CHUNK + 2) - 1])
        parts.append(hidden[:, -1:])
        hidden = torch.cat(parts, dim=1)
    return hidden, out, chunks


def encode(
    model: StableDiffusionModel, token_ids: list[torch.Tensor], clip_skip: int | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(encoder hidden states for the U-Net, pooled text embedding for SDXL or None)."""
    runs = [
        _run(encoder, ids, layer, norm)
        for encoder, ids, (layer, norm) in zip(model.text_encoders, token_ids, layers(model, clip_skip))
    ]
    if not model.family.is_xl:
        return runs[0][0], None
    _, out, chunks = runs[1]
    pooled = out.text_embeds.reshape(token_ids[1].shape[0], chunks, -1)[:, 0]  # the first chunk's pool
    return torch.cat([run[0] for run in runs], dim=-1), pooled


def sdxl_time_ids(original_size, crop_top_left, target_size, dtype=torch.float32) -> torch.Tensor:
    """SDXL's added conditioning: (original h, w, crop top, left, target h, w) per image."""
    rows = [list(o) + list(c) + list(t) for o, c, t in zip(original_size, crop_top_left, target_size)]
    return torch.tensor(rows, dtype=dtype)
