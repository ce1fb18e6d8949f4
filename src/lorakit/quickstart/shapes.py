"""The synthetic picture world of the tiny base model: plain shapes in plain colours.

Every picture is a pure function of its seed, so the pretraining set, the demo dataset and the
test images are the same on every machine. Shapes are drawn at 4x size and shrunk, so edges are
antialiased like real photos rather than hard pixel steps (an easier target for a small VAE).
Shapes are never rotated: the shape score tells them apart by how much of their bounding box
they fill (see `score.py`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from PIL import Image, ImageDraw

SIZE = 32  # the tiny model's native resolution

# Colours the base model learns, and the one it never sees (the demo LoRA teaches it).
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 35, 35),
    "yellow": (235, 205, 30),
    "green": (40, 170, 55),
    "cyan": (30, 190, 210),
    "blue": (45, 75, 225),
}
HELD_OUT_COLOUR = "magenta"
HELD_OUT_RGB = (215, 40, 215)
SHAPES = ("circle", "square", "triangle")
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (250, 250, 250),
    "black": (12, 12, 12),
    "gray": (128, 128, 128),
}


@dataclass(frozen=True)
class Picture:
    shape: str
    colour: str
    background: str
    rgb: tuple[int, int, int]
    box: tuple[int, int, int, int]  # left, top, right, bottom in SIZE pixels


def picture(
    seed: int, shape: str | None = None, colour: str | None = None, background: str | None = None
) -> Picture:
    """A random picture description; any of shape, colour, background may be fixed."""
    rng = random.Random(seed)
    shape = shape or rng.choice(SHAPES)
    colour = colour or rng.choice(list(COLOURS))
    background = background or rng.choice(list(BACKGROUNDS))
    base = HELD_OUT_RGB if colour == HELD_OUT_COLOUR else COLOURS[colour]
    # a little jitter per channel, so a colour name means a small region, not one exact value
    rgb = tuple(max(0, min(255, c + rng.randint(-12, 12))) for c in base)
    side = rng.randint(SIZE * 2 // 5, SIZE * 4 // 5)  # 12..25 px
    left = rng.randint(1, SIZE - side - 1)
    top = rng.randint(1, SIZE - side - 1)
    return Picture(shape, colour, background, rgb, (left, top, left + side, top + side))


def draw(p: Picture, size: int = SIZE) -> Image.Image:
    scale = 4 * size / SIZE
    big = 4 * size
    image = Image.new("RGB", (big, big), BACKGROUNDS[p.background])
    left, top, right, bottom = (round(v * scale) for v in p.box)
    pen = ImageDraw.Draw(image)
    if p.shape == "circle":
        pen.ellipse([left, top, right - 1, bottom - 1], fill=p.rgb)
    elif p.shape == "square":
        pen.rectangle([left, top, right - 1, bottom - 1], fill=p.rgb)
    elif p.shape == "triangle":
        pen.polygon([((left + right) / 2, top), (right - 1, bottom - 1), (left, bottom - 1)], fill=p.rgb)
    else:
        raise ValueError(f"unknown shape {p.shape!r}; the shapes are {', '.join(SHAPES)}")
    return image.resize((size, size), Image.Resampling.BOX)


def caption(p: Picture, rng: random.Random, colour_word: str | None = None) -> str:
    """One of several caption styles, so the base model understands both sentences and
    comma-separated tags (the style most LoRA datasets use). Parts are sometimes left out, so a
    prompt that names only some attributes still works (the rest is then picked at random)."""
    colour = p.colour if colour_word is None else colour_word
    with_colour = rng.random() > 0.1
    with_background = rng.random() > 0.2
    thing = f"{colour} {p.shape}" if with_colour else p.shape
    if rng.random() < 0.5:
        text = f"a {thing}" + (f" on a {p.background} background" if with_background else "")
    else:
        text = thing + (f", {p.background} background" if with_background else "")
    return text


def training_pair(index: int, seed: int = 0) -> tuple[Image.Image, str, Picture]:
    """Picture number `index` of the pretraining set (never the held-out colour)."""
    p = picture(seed * 1_000_003 + index)
    return draw(p), caption(p, random.Random(f"caption {seed} {index}")), p
