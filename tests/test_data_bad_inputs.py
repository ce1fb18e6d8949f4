"""A corpus of broken and unusual inputs: each gives the message a user needs, and reading them
(library or `lorakit dataset check`) changes nothing on disk."""

import io
import os
from pathlib import Path

import numpy as np
import pytest
from datagen import noise_image, snapshot, write
from PIL import Image

from lorakit.cli.main import main
from lorakit.data import build_datasets, config_from_folders, load_config
from lorakit.data.images import load_image, probe_image
from lorakit.errors import DatasetError


def make_corpus(root: Path) -> dict[str, Path]:
    """Write every bad input; return name -> the path its problem is reported on."""
    train = root / "train"
    good = train / "10_sks dog"
    p: dict[str, Path] = {}
    for i in range(3):
        noise_image(good / f"ok{i}.png", (64, 64), i)
        write(good / f"ok{i}.caption", "sks dog, photo")
    # 1. truncated PNG: the first half of a real file
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, "PNG")
    p["truncated"] = write(good / "truncated.png", buf.getvalue()[: len(buf.getvalue()) // 2])
    # 2. zero-byte JPEG
    p["zero_byte"] = write(good / "empty.jpg", b"")
    # 3. CMYK JPEG: pure cyan+magenta ink = blue
    p["cmyk"] = good / "cmyk.jpg"
    Image.new("CMYK", (64, 64), (255, 255, 0, 0)).save(p["cmyk"], quality=95)
    # 4. 16-bit grayscale PNG at 32896/65535 = 128/255 (mid grey)
    p["16bit"] = good / "deep.png"
    Image.fromarray(np.full((64, 64), 32896, np.uint16)).save(p["16bit"])
    # 5. palette PNG whose index 0 is transparent: left half transparent, right half red
    p["palette"] = good / "palette.png"
    pal = Image.new("P", (64, 64), 0)
    pal.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    pal.paste(1, (32, 0, 64, 64))
    pal.save(p["palette"], transparency=0)
    # 6. 1x1 image
    p["1x1"] = noise_image(good / "dot.png", (1, 1))
    # 7. 20000x100 image
    p["strip"] = good / "strip.png"
    Image.new("RGB", (20000, 100), (10, 200, 30)).save(p["strip"])
    # 8. non-UTF-8 caption (Windows-1252)
    noise_image(good / "latin.png", (64, 64), 8)
    p["latin1_caption"] = write(good / "latin.caption", "café, 1girl".encode("cp1252"))
    # 9. empty caption
    noise_image(good / "blank.png", (64, 64), 9)
    p["empty_caption"] = write(good / "blank.caption", "")
    # 10. two images with one stem
    p["twin_png"] = noise_image(good / "twin.png", (64, 64), 10)
    p["twin_jpg"] = noise_image(good / "twin.jpg", (64, 64), 11)
    # 11. a symbolic link that points to itself
    p["symlink_loop"] = good / "loop.png"
    os.symlink("loop.png", p["symlink_loop"])
    # 12. a text file named .png
    p["not_an_image"] = write(good / "notes.png", "this is not an image")
    # 13. a GIF, which is not read
    p["gif"] = good / "anim.gif"
    Image.new("P", (8, 8)).save(p["gif"])
    # 14. macOS metadata twin
    p["appledouble"] = write(good / "._ok0.png", b"\x00\x05\x16\x07junk")
    # 15. phone photo stored sideways with EXIF orientation 6 (rotate 90 degrees)
    p["exif"] = good / "phone.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (96, 64), (200, 100, 50)).save(p["exif"], exif=exif)
    # 16. a link to a file that is gone
    p["dangling"] = good / "gone.png"
    os.symlink("does-not-exist.png", p["dangling"])
    # 17. folder without a repeat count
    p["no_repeats"] = train / "sks_dog"
    noise_image(p["no_repeats"] / "x.png", (64, 64))
    # 18. a folder with .txt captions while the extension is .caption
    txt = train / "3_cat"
    noise_image(txt / "c.png", (64, 64), 3)
    write(txt / "c.txt", "cat")
    p["txt_captions"] = txt
    # 19. regularization folder with no images
    p["empty_reg"] = root / "reg" / "1_dog"
    write(p["empty_reg"] / "readme.txt", "put class images here")
    return p


@pytest.fixture
def corpus(tmp_path):
    return tmp_path, make_corpus(tmp_path)


def messages(problems, path, level=None):
    return [x.message for x in problems if x.path == path and (level is None or x.level == level)]


def has(problems, path, text, level="error"):
    found = messages(problems, path, level)
    assert any(text in m for m in found), f"{path}: no {level} with {text!r} in {found}"


def test_each_bad_input_gives_the_expected_message(corpus):
    root, p = corpus
    before = snapshot(root)
    config = config_from_folders(root / "train", root / "reg", options={"resolution": 64})
    group = build_datasets(config, strict=False)
    probs = group.problems

    has(probs, p["truncated"], "image is truncated or damaged")
    has(probs, p["zero_byte"], "file is empty (0 bytes)")
    has(probs, p["cmyk"], "CMYK image converted to RGB", "note")
    has(probs, p["16bit"], "16-bit image scaled to 8 bits", "note")
    has(probs, p["palette"], "transparent parts filled with colour (255, 255, 255)", "note")
    has(probs, p["1x1"], "image is only 1x1 pixels: it would be enlarged 64 times")
    has(probs, p["strip"], "aspect ratio 200:1 (20000x100) is far from every bucket")
    # one 64x64 bucket (bucketing off): scaled to 12800x64, of which 64x64 is kept: 1 - 1/200 = 99.5%
    has(probs, p["strip"], "cuts away 99.5% of the image")
    has(probs, p["latin1_caption"], "caption file is not UTF-8 text (byte 0xe9 at position 3)")
    has(probs, p["empty_caption"], "caption file is empty. Write the caption in it, or delete it")
    has(probs, p["twin_png"], "2 images share the name 'twin' (twin.jpg, twin.png)")
    has(probs, p["twin_jpg"], "2 images share the name 'twin'")
    has(probs, p["symlink_loop"], "symbolic link loop")
    has(probs, p["not_an_image"], "not a readable image")
    has(probs, p["gif"], "not used: .gif images are not read", "warning")
    has(probs, p["appledouble"], "skipped: a macOS metadata file", "note")
    has(probs, p["exif"], "rotated upright as its EXIF orientation says", "note")
    has(probs, p["dangling"], "symbolic link to a missing file (does-not-exist.png)")
    has(probs, p["no_repeats"], "Rename it to '10_sks_dog'")
    has(probs, p["txt_captions"], 'set caption_extension = ".txt"')
    has(probs, p["empty_reg"], "regularization folder has no images")

    # the good images are there, the broken ones are not
    names = sorted(r.path.name for _, _, r in group.records() if not r.is_reg)
    assert {"ok0.png", "ok1.png", "ok2.png", "cmyk.jpg", "deep.png", "palette.png", "phone.jpg"} <= set(names)
    assert not {"truncated.png", "empty.jpg", "notes.png", "latin.png", "blank.png"} & set(names)
    phone = next(r for _, _, r in group.records() if r.path.name == "phone.jpg")
    assert phone.size == (64, 96)  # stored 96x64, trained upright

    # strict mode (the training path) stops with every error listed
    with pytest.raises(DatasetError) as e:
        build_datasets(config)
    text = str(e.value)
    for key in (
        "truncated",
        "zero_byte",
        "1x1",
        "strip",
        "latin1_caption",
        "symlink_loop",
        "no_repeats",
        "txt_captions",
        "empty_reg",
    ):
        assert str(p[key]) in text, key
    assert "Run 'lorakit dataset check'" in text

    assert snapshot(root) == before  # nothing written, touched or added


def test_dataset_check_cli_reports_them_and_writes_nothing(corpus, capsys):
    root, p = corpus
    before = snapshot(root)
    code = main(
        [
            "dataset",
            "check",
            str(root / "train"),
            "--reg_data_dir",
            str(root / "reg"),
            "--resolution",
            "64",
            "--verbose",
        ]
    )
    out = capsys.readouterr().out
    assert code == 1
    assert f"error: {p['truncated']}: image is truncated or damaged" in out
    assert f"error: {p['no_repeats']}: folder name has no repeat count" in out
    assert f"note: {p['cmyk']}: CMYK image converted to RGB" in out
    assert "Result: " in out and "error(s) must be fixed before training." in out
    assert snapshot(root) == before


def test_toml_typo_and_missing_image_dir(tmp_path, capsys):
    typo = write(
        tmp_path / "typo.toml", "[[datasets]]\n[[datasets.subsets]]\nimage_dir = 'x'\nnum_repeat = 10\n"
    )
    missing = write(
        tmp_path / "missing.toml", "[[datasets]]\nresolution = 512\n[[datasets.subsets]]\nnum_repeats = 10\n"
    )
    before = snapshot(tmp_path)
    with pytest.raises(DatasetError, match="unknown key 'num_repeat'. Did you mean 'num_repeats'"):
        load_config(typo)
    with pytest.raises(DatasetError, match="image_dir is missing"):
        load_config(missing)
    assert main(["dataset", "check", str(typo)]) == 1
    assert "Did you mean 'num_repeats'?" in capsys.readouterr().out
    assert snapshot(tmp_path) == before


def test_converted_images_have_the_right_pixels(corpus):
    _, p = corpus
    cmyk, _ = load_image(p["cmyk"])
    assert cmyk.shape == (64, 64, 3)
    assert np.abs(cmyk[32, 32].astype(int) - [0, 0, 255]).max() < 8  # blue, not inverted
    deep, _ = load_image(p["16bit"])
    assert set(np.unique(deep)) == {128}  # not clipped to white
    pal, mask = load_image(p["palette"], alpha_mask=True)
    assert (pal[:, :32] == 255).all()  # transparent -> white background
    assert (pal[:, 32:] == [255, 0, 0]).all()
    assert (mask[:, :32] == 0).all() and (mask[:, 32:] == 1).all()
    black_bg, _ = load_image(p["palette"], background=(0, 0, 0))
    assert (black_bg[:, :32] == 0).all()
    phone, _ = load_image(p["exif"])
    assert phone.shape == (96, 64, 3)
    assert probe_image(p["exif"]).size == (64, 96)


def test_sixteen_bit_rgb_png_is_scaled_not_clipped(tmp_path):
    """Written by hand (Pillow cannot write 16-bit RGB): every sample 0x8080 -> 128."""
    import struct
    import zlib

    w = h = 4
    raw = b"".join(b"\x00" + b"\x80\x80" * 3 * w for _ in range(h))

    def chunk(kind, data):
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    path = write(tmp_path / "rgb16.png", png)
    rgb, _ = load_image(path)
    assert rgb.shape == (4, 4, 3) and set(np.unique(rgb)) == {128}
