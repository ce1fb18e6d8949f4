"""The concept score on drawn pictures: every colour and shape of the tiny model's world, the
held-out magenta, and the near misses the score must refuse."""

import numpy as np
import pytest
from PIL import Image, ImageDraw

from lorakit.quickstart import shapes
from lorakit.quickstart.score import (
    HUE_BANDS,
    clean,
    foreground_mask,
    read_image,
    share_showing,
    shows_colour,
)


@pytest.mark.parametrize("seed_base", [0, 5000])
def test_every_drawn_picture_reads_as_its_colour_and_shape(seed_base):
    for seed in range(seed_base, seed_base + 150):
        p = shapes.picture(seed)
        reading = read_image(shapes.draw(p))
        assert (reading.colour, reading.shape) == (p.colour, p.shape), (seed, p, reading)


@pytest.mark.parametrize("shape", shapes.SHAPES)
@pytest.mark.parametrize("background", list(shapes.BACKGROUNDS))
def test_magenta_reads_as_magenta_and_nothing_else(shape, background):
    for seed in range(8):
        image = shapes.draw(shapes.picture(seed, shape=shape, colour="magenta", background=background))
        reading = read_image(image)
        assert reading.colour == "magenta" and reading.shape == shape
        assert shows_colour(image, "magenta") and not shows_colour(image, "red")
        assert not shows_colour(image, "blue")


def disc(rgb, background=(250, 250, 250), box=(6, 6, 26, 26)) -> Image.Image:
    image = Image.new("RGB", (32, 32), background)
    ImageDraw.Draw(image).ellipse(box, fill=rgb)
    return image


@pytest.mark.parametrize(
    ("rgb", "why"),
    [
        ((140, 40, 215), "violet, hue 268"),
        ((215, 40, 150), "pink-red, hue 338"),
        ((200, 150, 200), "a pale mauve: magenta hue but washed out (saturation 0.25)"),
        ((60, 20, 60), "a dark plum: magenta hue but too dark"),
    ],
)
def test_near_misses_are_not_magenta(rgb, why):
    assert not shows_colour(disc(rgb), "magenta"), why


def test_half_magenta_half_red_is_neither_unless_one_has_the_majority():
    image = Image.new("RGB", (32, 32), (250, 250, 250))
    pen = ImageDraw.Draw(image)
    pen.rectangle([6, 6, 15, 25], fill=(215, 40, 215))
    pen.rectangle([16, 6, 25, 25], fill=(220, 35, 35))
    shares = read_image(image).colour_shares
    assert shares["magenta"] == pytest.approx(0.5, abs=0.05) and shares["red"] == pytest.approx(0.5, abs=0.05)
    pen.rectangle([16, 6, 19, 25], fill=(215, 40, 215))  # now magenta holds 14 of 20 columns
    assert read_image(image).colour == "magenta"


def test_empty_and_specked_pictures_show_nothing():
    blank = Image.new("RGB", (32, 32), (128, 128, 128))
    assert read_image(blank).colour is None and read_image(blank).shape is None
    specks = np.full((32, 32, 3), 250, np.uint8)
    rng = np.random.default_rng(0)
    for y, x in rng.integers(1, 31, size=(12, 2)):
        specks[y, x] = (215, 40, 215)  # single magenta pixels: noise, not a picture of magenta
    assert read_image(specks).foreground == 0.0
    assert not shows_colour(specks, "magenta")


def test_a_tiny_blob_is_below_the_foreground_minimum():
    image = disc((215, 40, 215), box=(14, 14, 18, 18))  # 5x5 pixels: 2% of the picture
    reading = read_image(image)
    assert 0 < reading.foreground < 0.03 and reading.colour is None


def test_clean_keeps_the_tip_of_a_triangle_and_drops_specks():
    mask = np.zeros((12, 12), bool)
    for row in range(2, 10):  # a triangle whose apex is one pixel wide
        half = (row - 2) // 2
        mask[row, 6 - half : 7 + half] = True
    mask[0, 0] = mask[11, 11] = True
    kept = clean(mask)
    assert kept[2, 6] and not kept[0, 0] and not kept[11, 11]


def test_background_is_read_from_the_frame_not_assumed_white():
    on_black = disc((40, 170, 55), background=(12, 12, 12))
    assert foreground_mask(on_black).sum() == foreground_mask(disc((40, 170, 55))).sum()
    assert read_image(on_black).colour == "green"


def test_soft_and_uneven_shapes_keep_their_names():
    """A model's shapes are not geometric: rounded corners, wavy sides, ovals."""
    rounded = Image.new("RGB", (32, 32), (250, 250, 250))
    ImageDraw.Draw(rounded).rounded_rectangle([6, 6, 25, 25], radius=4, fill=(40, 170, 55))
    assert read_image(rounded).shape == "square"
    wavy = Image.new("RGB", (32, 32), (12, 12, 12))  # sides bowed inwards by 2 pixels
    ImageDraw.Draw(wavy).polygon(
        [(5, 5), (15, 7), (26, 5), (24, 15), (26, 26), (15, 24), (5, 26), (7, 15)], fill=(45, 75, 225)
    )
    assert read_image(wavy).shape == "square"
    assert read_image(disc((220, 35, 35), box=(4, 9, 27, 23))).shape == "circle"  # an oval
    octagon = Image.new("RGB", (32, 32), (128, 128, 128))
    ImageDraw.Draw(octagon).regular_polygon((16, 16, 11), 8, fill=(235, 205, 30))
    assert read_image(octagon).shape == "circle"
    wide = Image.new("RGB", (32, 32), (250, 250, 250))  # a low, wide triangle
    ImageDraw.Draw(wide).polygon([(16, 10), (29, 22), (3, 22)], fill=(215, 40, 215))
    assert read_image(wide).shape == "triangle"


def test_share_showing_and_unknown_colour():
    images = [disc((215, 40, 215)), disc((215, 40, 215)), disc((45, 75, 225)), Image.new("RGB", (32, 32))]
    assert share_showing(images, "magenta") == 0.5
    assert share_showing([], "magenta") == 0.0
    with pytest.raises(ValueError, match="unknown colour 'purple'"):
        shows_colour(images[0], "purple")
    assert set(shapes.COLOURS) | {shapes.HELD_OUT_COLOUR} == set(HUE_BANDS)


def test_larger_pictures_score_the_same():
    for seed in range(20):
        p = shapes.picture(seed)
        reading = read_image(shapes.draw(p, size=64))
        assert (reading.colour, reading.shape) == (p.colour, p.shape)
