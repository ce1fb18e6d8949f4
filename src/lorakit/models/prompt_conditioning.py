"""Prompts -> the U-Net's text conditioning as A1111 builds it, so a prompt and seed give the
picture A1111 gives (training captions keep sd-scripts' rules, in `conditioning`).

- The prompt is read with A1111's emphasis grammar (`prompt_syntax`), each piece tokenized.
- Tokens go into chunks of 75. When a chunk is full and a comma came within its last 20 tokens,
  the chunk ends after that comma and the rest moves on; `BREAK` ends a chunk early.
- Each chunk is encoded on its own as start + 75 tokens + end: the tokens, the end token, then the
  tokenizer's padding (the end token for CLIP-L, id 0 for OpenCLIP, as in A1111); the chunks'
  hidden states are joined along the token axis (77 per chunk).
- Emphasis, per chunk and per text encoder: A1111 multiplies each token's hidden state by its
  weight, then rescales the chunk to its original mean; ComfyUI instead moves each weighted token
  away from the empty prompt's hidden state, `empty + w * (z - empty)`, without rescaling.
- SDXL: both encoders read the same chunks; the pooled embedding is the first chunk's.
- The prompt and negative prompt get the same number of chunks, the shorter one padded with the
  empty prompt's chunk (A1111's "pad prompt/negative prompt to the same length").

Styles: "a1111" (the above), "comfy" (the same grammar and chunks, ComfyUI's weighting) and
"plain" (brackets and BREAK are plain text, A1111's "Emphasis: None"; long prompts still chunk).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .conditioning import CHUNK, hidden_states, layers
from .model import StableDiffusionModel
from .prompt_syntax import PromptError, check_single_prompt, is_break, parse_prompt_attention

STYLES = ("a1111", "comfy", "plain")
COMMA_BACKTRACK = 20  # A1111's comma_padding_backtrack


@dataclass
class Chunk:
    """Up to 75 token ids (no start/end token) and the emphasis weight of each."""

    tokens: list[int]
    weights: list[float]


@dataclass
class PromptEmbedding:
    """What the U-Net reads: hidden [1, chunks·77, dim]; pooled [1, dim] (SDXL) or None."""

    hidden: torch.Tensor
    pooled: torch.Tensor | None
    chunks: int


def check_style(style: str) -> str:
    if style not in STYLES:
        raise PromptError(f"prompt style '{style}': use one of {', '.join(STYLES)}.")
    return style


def parse(text: str, style: str = "a1111", negative: bool = False) -> list[tuple[str, float]]:
    """The prompt's (text, weight) pieces in `style`; refuses what A1111 would draw differently."""
    if check_style(style) == "plain":
        return [(text, 1.0)]
    if style == "a1111":
        check_single_prompt(text, negative)
    return parse_prompt_attention(text)


def prompt_chunks(tokenizer, pieces: list[tuple[str, float]]) -> list[Chunk]:
    """A1111's chunking of parsed pieces (module doc); at least one chunk, even for ""."""
    comma = tokenizer.convert_tokens_to_ids(",</w>")
    ids = tokenizer([text for text, _ in pieces], add_special_tokens=False, verbose=False).input_ids
    chunks: list[Chunk] = []
    current = Chunk([], [])
    last_comma = -1
    for piece, piece_ids in zip(pieces, ids):
        if is_break(piece):
            chunks.append(current)
            current, last_comma = Chunk([], []), -1
            continue
        for token in piece_ids:
            full = len(current.tokens) == CHUNK
            if token == comma:
                last_comma = len(current.tokens)
            elif full and last_comma != -1 and CHUNK - last_comma <= COMMA_BACKTRACK:
                cut = last_comma + 1
                chunks.append(Chunk(current.tokens[:cut], current.weights[:cut]))
                current, last_comma = Chunk(current.tokens[cut:], current.weights[cut:]), -1
            if len(current.tokens) == CHUNK:
                chunks.append(current)
                current, last_comma = Chunk([], []), -1
            current.tokens.append(token)
            current.weights.append(piece[1])
    if current.tokens or not chunks:
        chunks.append(current)
    return chunks


def chunk_tensors(chunks: list[Chunk], tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids [n, 77], weights [n, 77]) with this tokenizer's start, end and padding tokens; the
    special tokens weigh 1."""
    ids, weights = [], []
    for chunk in chunks:
        pad = CHUNK - len(chunk.tokens)
        ids.append(
            [tokenizer.bos_token_id, *chunk.tokens, tokenizer.eos_token_id] + [tokenizer.pad_token_id] * pad
        )
        weights.append([1.0, *chunk.weights, 1.0] + [1.0] * pad)
    return torch.tensor(ids, dtype=torch.long), torch.tensor(weights, dtype=torch.float32)


def emphasize(z: torch.Tensor, weights: torch.Tensor, style: str, empty: torch.Tensor | None = None):
    """One chunk's hidden states [1, 77, dim] with its token weights [77] applied (module doc);
    `empty` is the empty prompt's hidden states, which ComfyUI's weighting needs."""
    if bool((weights == 1).all()):
        return z
    w = weights.to(z.device)[None, :, None]
    if style == "comfy":
        empty = empty.float()
        return torch.where(w != 1, (z.float() - empty) * w + empty, z.float()).to(z.dtype)
    original = z.float().mean()
    weighted = z.float() * w
    return (weighted * (original / weighted.mean())).to(z.dtype)


def encode_prompt(
    model: StableDiffusionModel, text: str, style: str = "a1111", clip_skip: int = 1, negative: bool = False
) -> PromptEmbedding:
    """One prompt's conditioning, A1111's way (module doc). clip_skip: SD1/SD2 only."""
    pieces = parse(text, style, negative)
    if model.embeddings:
        pieces = [(model.embeddings.rewrite(piece), weight) for piece, weight in pieces]
    chunks = prompt_chunks(model.tokenizers[0], pieces)
    per_encoder, pooled = [], None
    encoders = zip(model.tokenizers, model.text_encoders, layers(model, clip_skip))
    for tokenizer, encoder, (layer, norm) in encoders:
        ids, weights = chunk_tensors(chunks, tokenizer)
        empty = None
        if style == "comfy" and bool((weights != 1).any()):
            empty = hidden_states(encoder, chunk_tensors([Chunk([], [])], tokenizer)[0], layer, norm)[0]
        hidden = []
        for i in range(len(chunks)):
            z, out = hidden_states(encoder, ids[i : i + 1], layer, norm)
            hidden.append(emphasize(z, weights[i], style, empty))
            if i == 0 and model.family.is_xl:  # the second encoder's (OpenCLIP) projection wins
                pooled = getattr(out, "text_embeds", None)
        per_encoder.append(torch.cat(hidden, dim=1))
    return PromptEmbedding(torch.cat(per_encoder, dim=-1), pooled, len(chunks))


def encode_prompts(
    model: StableDiffusionModel, prompt: str, negative: str, style: str = "a1111", clip_skip: int = 1
) -> tuple[PromptEmbedding, PromptEmbedding]:
    """(prompt, negative prompt) conditioning with the same number of chunks: the shorter one is
    padded with the empty prompt's chunk."""
    cond = encode_prompt(model, prompt, style, clip_skip)
    uncond = encode_prompt(model, negative, style, clip_skip, negative=True)
    if cond.chunks != uncond.chunks:
        empty = encode_prompt(model, "", style, clip_skip).hidden
        cond, uncond = (_padded(e, max(cond.chunks, uncond.chunks), empty) for e in (cond, uncond))
    return cond, uncond


def _padded(embedding: PromptEmbedding, chunks: int, empty: torch.Tensor) -> PromptEmbedding:
    extra = chunks - embedding.chunks
    if not extra:
        return embedding
    hidden = torch.cat([embedding.hidden, empty.repeat(1, extra, 1)], dim=1)
    return PromptEmbedding(hidden, embedding.pooled, chunks)
