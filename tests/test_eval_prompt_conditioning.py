"""Long and weighted prompts encoded as A1111 encodes them: chunk boundaries and token ids worked
out by hand, and the conditioning checked against an independent computation (each chunk through
the text encoder, scaled by its weights, the mean restored) on the tiny SD1 and SDXL models, then
the pictures `generate` makes from it."""

import numpy as np
import pytest
import torch

from lorakit.evaluation.generate import GenerationSettings, Generator
from lorakit.models.load import load_model
from lorakit.models.prompt_conditioning import (
    chunk_tensors,
    encode_prompt,
    encode_prompts,
    parse,
    prompt_chunks,
)
from lorakit.models.prompt_syntax import PromptError
from lorakit.models.tiny import random_model
from lorakit.models.tokenizers import clip_tokenizer

TOKENIZER = clip_tokenizer()
BOS, EOS = 49406, 49407
CAT, DOG, BIRD, FISH, COMMA = TOKENIZER.convert_tokens_to_ids(
    ["cat</w>", "dog</w>", "bird</w>", "fish</w>", ",</w>"]
)

# 200 tokens: 60 cat, ',', 20 dog (weight 1.2), ',', 60 bird, 58 fish
LONG = "cat " * 59 + "cat, (" + "dog " * 19 + "dog:1.2), " + "bird " * 60 + "fish " * 58
LONG_PLAIN = LONG.replace("(", "").replace(":1.2)", "")
# By hand: chunk 1 is full after 60 cats, the comma and 14 dogs; the 15th dog finds the comma
# 15 tokens back (<= 20), so chunk 1 ends after the comma and the 14 dogs move on. Chunk 2: 20
# dogs, the comma, 54 birds = 75, its comma 55 tokens back (> 20): no back-off. Chunk 3: the rest.
LONG_CHUNKS = [
    ([CAT] * 60 + [COMMA], [1.0] * 61),
    ([DOG] * 20 + [COMMA] + [BIRD] * 54, [1.2] * 20 + [1.0] * 55),
    ([BIRD] * 6 + [FISH] * 58, [1.0] * 64),
]


def by_hand(tokens: list[int], weights: list[float], pad: int) -> tuple[list[int], list[float]]:
    """One chunk's 77 ids and weights: start, tokens, end, padding."""
    fill = 75 - len(tokens)
    return [BOS, *tokens, EOS] + [pad] * fill, [1.0, *weights, 1.0] + [1.0] * fill


def chunks_of(prompt: str) -> list[tuple[list[int], list[float]]]:
    return [(c.tokens, c.weights) for c in prompt_chunks(TOKENIZER, parse(prompt))]


def test_a_200_token_prompt_gives_3_chunks_cut_after_the_comma():
    assert sum(len(tokens) for tokens, _ in LONG_CHUNKS) == 200
    assert chunks_of(LONG) == LONG_CHUNKS
    for open_clip, pad in ((False, EOS), (True, 0)):  # CLIP-L pads with the end token, OpenCLIP with 0
        ids, weights = chunk_tensors(prompt_chunks(TOKENIZER, parse(LONG)), clip_tokenizer(open_clip))
        expected = [by_hand(tokens, w, pad) for tokens, w in LONG_CHUNKS]
        assert ids.tolist() == [row for row, _ in expected]
        torch.testing.assert_close(weights, torch.tensor([w for _, w in expected]))


@pytest.mark.parametrize(
    "prompt, expected",
    [
        ("", [[]]),
        ("cat BREAK dog", [[CAT], [DOG]]),
        ("BREAK cat", [[], [CAT]]),  # A1111 starts a chunk even when the one before is empty
        ("cat BREAK", [[CAT]]),
        ("cat " * 75, [[CAT] * 75]),
        ("cat " * 76, [[CAT] * 75, [CAT]]),
        # a comma that arrives when the chunk is full opens the next one
        ("cat " * 75 + ", dog", [[CAT] * 75, [COMMA, DOG]]),
        # a comma exactly 20 tokens back: cut after it; 21 back: no back-off
        ("cat " * 55 + ", " + "cat " * 21, [[CAT] * 55 + [COMMA], [CAT] * 21]),
        ("cat " * 54 + ", " + "cat " * 22, [[CAT] * 54 + [COMMA] + [CAT] * 20, [CAT] * 2]),
    ],
    ids=["empty", "break", "break-first", "break-last", "75", "76", "comma-at-75", "back-20", "back-21"],
)
def test_chunk_boundaries(prompt, expected):
    assert [tokens for tokens, _ in chunks_of(prompt)] == expected


# ---- the independent computation ------------------------------------------------------------


def hidden(encoder, ids, layer=None, final_norm=False):
    out = encoder(torch.tensor([ids]), output_hidden_states=True)
    z = out.last_hidden_state if layer is None else out.hidden_states[layer]
    if final_norm:
        z = getattr(encoder, "text_model", encoder).final_layer_norm(z)
    return z, out


def encode_by_hand(encoder, rows, layer=None, final_norm=False, style="a1111"):
    """Each chunk through the encoder on its own; A1111: z * w, then z * (old mean / new mean);
    ComfyUI: empty + w * (z - empty) where w != 1. Returns (hidden [1, n*77, d], first output)."""
    out_rows, first = [], None
    for ids, weights in rows:
        z, out = hidden(encoder, ids, layer, final_norm)
        first = out if first is None else first
        w = torch.tensor(weights)[None, :, None]
        if style == "a1111" and (w != 1).any():
            mean = z.mean()
            z = z * w
            z = z * (mean / z.mean())
        elif style == "comfy" and (w != 1).any():
            empty, _ = hidden(encoder, by_hand([], [], ids[-1])[0], layer, final_norm)
            z = torch.where(w != 1, (z - empty) * w + empty, z)
        out_rows.append(z)
    return torch.cat(out_rows, dim=1), first


@pytest.fixture(scope="module")
def sd1():
    return random_model("sd1")


@pytest.fixture(scope="module")
def sdxl():
    return random_model("sdxl")


@pytest.mark.parametrize("clip_skip", [1, 2])
def test_sd1_conditioning_equals_the_independent_computation(sd1, clip_skip):
    rows = [by_hand(tokens, w, EOS) for tokens, w in LONG_CHUNKS]
    layer = None if clip_skip == 1 else -clip_skip
    with torch.no_grad():
        expected, _ = encode_by_hand(sd1.text_encoders[0], rows, layer, final_norm=clip_skip > 1)
        got = encode_prompt(sd1, LONG, clip_skip=clip_skip)
        plain = encode_prompt(sd1, LONG_PLAIN, clip_skip=clip_skip)
    assert got.hidden.shape == (1, 3 * 77, 32) and got.pooled is None
    torch.testing.assert_close(got.hidden, expected, rtol=0, atol=1e-6)
    # the weights did something: the dogs' chunk differs from the unweighted prompt's, the others not
    assert (got.hidden[:, 77:154] - plain.hidden[:, 77:154]).abs().max() > 1e-2
    torch.testing.assert_close(got.hidden[:, :77], plain.hidden[:, :77], rtol=0, atol=0)


def test_sdxl_conditioning_equals_the_independent_computation(sdxl):
    first, second = sdxl.text_encoders
    with torch.no_grad():
        z1, _ = encode_by_hand(first, [by_hand(t, w, EOS) for t, w in LONG_CHUNKS], -2)
        z2, out = encode_by_hand(second, [by_hand(t, w, 0) for t, w in LONG_CHUNKS], -2)
        got = encode_prompt(sdxl, LONG, clip_skip=2)  # clip skip is not used for SDXL
    # each encoder restores its own mean, then the two are joined feature-wise
    torch.testing.assert_close(got.hidden, torch.cat([z1, z2], dim=-1), rtol=0, atol=1e-6)
    torch.testing.assert_close(got.pooled, out.text_embeds, rtol=0, atol=0)  # the first chunk's pool


def test_comfy_weighting_moves_away_from_the_empty_prompt(sd1):
    rows = [by_hand(tokens, w, EOS) for tokens, w in LONG_CHUNKS]
    with torch.no_grad():
        expected, _ = encode_by_hand(sd1.text_encoders[0], rows, style="comfy")
        got = encode_prompt(sd1, LONG, style="comfy")
        a1111 = encode_prompt(sd1, LONG)
    torch.testing.assert_close(got.hidden, expected, rtol=0, atol=1e-6)
    assert (got.hidden - a1111.hidden).abs().max() > 1e-3  # a different rule from A1111's


def test_plain_style_reads_brackets_and_break_as_text(sd1):
    assert parse("(cat:1.2) BREAK [dog]", "plain") == [("(cat:1.2) BREAK [dog]", 1.0)]
    with torch.no_grad():
        assert encode_prompt(sd1, "(cat) BREAK dog", style="plain").chunks == 1
        assert encode_prompt(sd1, "(cat) BREAK dog").chunks == 2
    with pytest.raises(PromptError, match="use one of a1111, comfy, plain"):
        parse("cat", "webui")


def test_the_shorter_prompt_is_padded_with_empty_chunks(sd1):
    with torch.no_grad():
        cond, uncond = encode_prompts(sd1, LONG, "blurry")
        alone = encode_prompt(sd1, "blurry")
        empty = encode_prompt(sd1, "")
        short, long_negative = encode_prompts(sd1, "cat", LONG)
    assert cond.hidden.shape == uncond.hidden.shape == (1, 3 * 77, 32)
    torch.testing.assert_close(uncond.hidden[:, :77], alone.hidden, rtol=0, atol=0)
    torch.testing.assert_close(uncond.hidden[:, 77:154], empty.hidden, rtol=0, atol=0)
    torch.testing.assert_close(uncond.hidden[:, 154:], empty.hidden, rtol=0, atol=0)
    assert short.hidden.shape == long_negative.hidden.shape == (1, 3 * 77, 32)


# ---- generate: the picture follows the conditioning -------------------------------------------


def pixels(generated) -> np.ndarray:
    return np.asarray(generated.image).astype(np.int16)


def request(**kw) -> GenerationSettings:
    base = dict(prompt=LONG, negative_prompt="blurry", sampler="Euler a", steps=3, cfg=6.0, seed=5)
    return GenerationSettings(**{**base, "width": 32, "height": 32, **kw})


@pytest.fixture(scope="module")
def generator(tiny_checkpoints):
    return Generator(load_model(tiny_checkpoints["sd1"]))


def test_generate_draws_the_weighted_long_prompt_from_the_independent_conditioning(generator, monkeypatch):
    weighted = pixels(generator(request())[0])
    plain = pixels(generator(request(prompt=LONG_PLAIN))[0])
    assert np.abs(weighted - plain).max() > 5  # the brackets change the picture

    encoder = generator.model.text_encoders[0]
    blurry = TOKENIZER.convert_tokens_to_ids("blurry</w>")
    with torch.no_grad():
        cond, _ = encode_by_hand(encoder, [by_hand(t, w, EOS) for t, w in LONG_CHUNKS])
        negative = [by_hand([blurry], [1.0], EOS), by_hand([], [], EOS), by_hand([], [], EOS)]
        uncond, _ = encode_by_hand(encoder, negative)
    monkeypatch.setattr(
        generator, "conditioning", lambda s: {"prompt_embeds": cond, "negative_prompt_embeds": uncond}
    )
    assert np.array_equal(pixels(generator(request())[0]), weighted)


def test_a_short_plain_prompt_gives_the_picture_diffusers_gives(generator, monkeypatch):
    ours = pixels(generator(request(prompt="a photo of a cat, smiling"))[0])
    monkeypatch.setattr(
        generator, "conditioning", lambda s: {"prompt": s.prompt, "negative_prompt": s.negative_prompt}
    )
    assert np.array_equal(pixels(generator(request(prompt="a photo of a cat, smiling"))[0]), ours)


def test_prompt_editing_is_refused_before_generating(generator):
    with pytest.raises(PromptError, match="prompt editing"):
        generator(request(prompt="a [cat:dog:0.5]"))
    generator(request(prompt="a [cat:dog:0.5]", prompt_style="comfy", steps=1))  # ComfyUI: text


def test_cli_prompt_style_and_separate_strengths(tiny_checkpoints, tmp_path, capsys):
    from eval_helpers import write_lora

    from lorakit.cli.main import main
    from lorakit.evaluation.pngmeta import read_parameters

    lora = write_lora(tmp_path / "style.safetensors", load_model(tiny_checkpoints["sd1"]), seed=3)
    out = tmp_path / "out"
    common = ["generate", "--model", str(tiny_checkpoints["sd1"]), "--steps", "1", "--seed", "2"]
    common += ["--width", "32", "--height", "32", "--out", str(out)]
    args = [*common, "--prompt", "(cat:1.3) BREAK dog", "--prompt-style", "plain", "--lora", f"{lora}:1:0"]
    assert main(args) == 0
    p = read_parameters(out / "00000-2.png")
    assert p.prompt == "(cat:1.3) BREAK dog <lora:style:1:0>"  # what A1111's PNG Info reproduces
    assert p.extra["Emphasis"] == "None"  # A1111's name for reading brackets as text
    assert main([*common, "--prompt", "a [cat|dog]"]) == 2
    assert "alternation" in capsys.readouterr().err


def test_training_previews_read_prompts_as_a1111(tiny_checkpoints, tmp_path):
    from types import SimpleNamespace

    from PIL import Image

    from lorakit.evaluation.prompts import load_prompts
    from lorakit.training.previews import make_previews

    model = load_model(tiny_checkpoints["sd1"])
    lines = [f"{LONG} --d 3 --s 2 --w 32 --h 32", f"{LONG_PLAIN} --d 3 --s 2 --w 32 --h 32"]
    config = SimpleNamespace(sample_sampler="euler_a", clip_skip=None)
    files, _ = make_previews(model, torch.nn.Linear(1, 1), load_prompts(lines), config, tmp_path, "x", "e1")
    weighted, plain = (np.asarray(Image.open(f)).astype(np.int16) for f in files[:2])
    settings = GenerationSettings(prompt=LONG, sampler="euler_a", steps=2, seed=3, width=32, height=32)
    expected = Generator(model, cast=False)(settings)[0]
    assert np.array_equal(weighted, pixels(expected))
    assert np.abs(weighted - plain).max() > 5


def test_prompts_of_different_lengths_are_drawn_each_as_if_alone(generator):
    """draw() batches prompts of one length; a 75-token prompt beside a 3-chunk one cannot share
    a batch, so each is drawn on its own, encoded once, with its own seed."""
    settings = request(sampler="Euler")
    short = "a photo of a cat"
    both = generator.draw(settings, [short, LONG_PLAIN], [5, 6])
    alone = [generator.draw(settings, [short], [5])[0], generator.draw(settings, [LONG_PLAIN], [6])[0]]
    for together, single in zip(both, alone):
        assert np.array_equal(np.asarray(together), np.asarray(single))
    assert not np.array_equal(np.asarray(both[0]), np.asarray(both[1]))
