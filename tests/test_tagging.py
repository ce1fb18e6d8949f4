"""`lorakit tag` and the WD14 tagger library, with tiny ONNX taggers built in the test.

Every number is checked against a computation in this file: the pixels against numpy/PIL
arithmetic written out here (compositing, padding, exact area averages), the tags against the
scores the tiny model was built to give.
"""

import json

import numpy as np
import pytest
from datagen import noise_image, snapshot, write
from PIL import Image
from tagging_helpers import constant_tagger, conv_tagger, pixel_tagger

from lorakit.cli.main import main
from lorakit.data.images import load_image
from lorakit.data.tagging import (
    ModelFilesMissing,
    TagOptions,
    area_resize,
    choose_tags,
    load_tagger,
    locate_tagger,
    mcut_threshold,
    parse_tag_replacement,
    tag_folder,
)
from lorakit.data.tagging.folder import run_folder
from lorakit.errors import ConfigError, ModelError

# (name, category, score the constant model gives)
LABELS = [
    ("general", "rating", 0.20),
    ("sensitive", "rating", 0.70),
    ("questionable", "rating", 0.08),
    ("explicit", "rating", 0.02),
    ("1girl", "general", 0.98),
    ("long_hair", "general", 0.80),
    ("smile", "general", 0.36),
    ("^_^", "general", 0.60),
    ("watermark", "general", 0.50),
    ("simple_background", "general", 0.34),
    ("blue_eyes", "general", 0.10),
    ("hatsune_miku_(vocaloid)", "character", 0.90),
    ("kagamine_rin", "character", 0.40),
]
SCORES = np.array([s for *_, s in LABELS])


def found(general=0.35, character=0.35):
    """The tags a threshold lets through, in tag-list order (computed here from LABELS)."""
    limit = {"general": general, "character": character}
    return [n for n, c, s in LABELS if c != "rating" and s >= limit[c]]


@pytest.fixture(scope="module")
def tagger(tmp_path_factory):
    return load_tagger(constant_tagger(tmp_path_factory.mktemp("const"), LABELS).parent, threads=1)


def _dataset(folder, n=3):
    for i in range(n):
        noise_image(folder / f"{i}.png", (20 + 7 * i, 16), i)
    return folder


def _tags_of(tagger, **options):
    return [t.name for t in choose_tags(SCORES, tagger.labels, TagOptions(**options))]


# ---- pixels -------------------------------------------------------------------------------------


def ref_area(square, m):
    """Area averages by brute force: enlarge every pixel m x m times, then sum S x S blocks (each is
    one output pixel's footprint), divide by S*S, round half up."""
    s = square.shape[0]
    big = np.repeat(np.repeat(square.astype(np.int64), m, axis=0), m, axis=1)
    sums = big.reshape(m, s, m, s, 3).sum(axis=(1, 3))
    return ((2 * sums + s * s) // (2 * s * s)).astype(np.uint8)


def ref_rgb(path):
    """8-bit RGB of a file, composited on white, by hand-written formulas."""
    img = Image.open(path)
    a = np.asarray(img).astype(np.int64)
    if img.mode == "RGBA":
        rgb, alpha = a[..., :3], a[..., 3:]
    elif img.mode == "P":
        rgb = np.array(img.getpalette(), dtype=np.int64).reshape(-1, 3)[a]
        alpha = np.where(a == img.info["transparency"], 0, 255)[..., None]
    elif img.mode == "CMYK":
        nk = 255 - a[..., 3:]
        return nk - (2 * a[..., :3] * nk + 255) // 510
    elif img.mode.startswith("I;16"):
        return np.repeat(((2 * a + 257) // 514)[..., None], 3, axis=2)
    else:
        return a
    return (2 * (rgb * alpha + 255 * (255 - alpha)) + 255) // 510


def ref_pixels(rgb, size):
    h, w = rgb.shape[:2]
    s = max(h, w)
    top, left = (s - h) // 2, (s - w) // 2
    square = np.pad(
        rgb.astype(np.uint8), ((top, s - h - top), (left, s - w - left), (0, 0)), constant_values=255
    )
    if s > size:
        square = ref_area(square, size)
    elif s < size:
        square = np.asarray(Image.fromarray(square).resize((size, size), Image.Resampling.LANCZOS))
    return square[:, :, ::-1].astype(np.float32)


@pytest.fixture(scope="module")
def odd_images(tmp_path_factory):
    """RGBA, palette with transparency, CMYK, 16-bit, non-square, smaller than the model input."""
    d = tmp_path_factory.mktemp("odd")
    rng = np.random.default_rng(1)
    rgba = rng.integers(0, 256, (23, 37, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(d / "rgba.png")
    pal = Image.fromarray(rng.integers(0, 16, (30, 19), dtype=np.uint8), "P")
    pal.putpalette(rng.integers(0, 256, 16 * 3).tolist())
    pal.save(d / "palette.png", transparency=3)
    Image.fromarray(rng.integers(0, 256, (40, 25, 4), dtype=np.uint8), "CMYK").save(d / "cmyk.jpg")
    Image.fromarray(rng.integers(0, 65536, (17, 29), dtype=np.uint16)).save(d / "gray16.png")
    Image.fromarray(rng.integers(0, 256, (13, 40, 3), dtype=np.uint8)).save(d / "wide.png")
    Image.fromarray(rng.integers(0, 256, (5, 3, 3), dtype=np.uint8)).save(d / "tiny.png")
    return sorted(d.iterdir())


@pytest.mark.parametrize("side,size", [(40, 16), (37, 16), (97, 31), (33, 32), (16, 8)])
def test_area_resize_is_the_exact_area_average(side, size):
    square = np.random.default_rng(side).integers(0, 256, (side, side, 3), dtype=np.uint8)
    assert np.array_equal(area_resize(square, size), ref_area(square, size))


def test_pixels_equal_an_independent_computation(tmp_path, odd_images):
    tagger = load_tagger(pixel_tagger(tmp_path / "pix", size=16).parent, threads=1)
    assert (tagger.input.size, tagger.input.channels_first, tagger.input.batch_size) == (16, False, None)
    expected = [ref_pixels(ref_rgb(p), 16) for p in odd_images]
    assert {p.name: Image.open(p).mode for p in odd_images}["gray16.png"].startswith("I;16")
    for path, want in zip(odd_images, expected):
        assert np.array_equal(tagger.pixels(load_image(path)[0]), want), path.name
    # what reaches the model: the same numbers, NHWC, the whole batch at once
    scores = tagger.scores(np.stack([tagger.pixels(load_image(p)[0]) for p in odd_images]))
    assert np.array_equal(scores, np.stack([w.reshape(-1) for w in expected]))


def test_tag_mapping_layout_gets_nchw_scaled_to_plus_minus_one(tmp_path, odd_images):
    tagger = load_tagger(pixel_tagger(tmp_path / "pix", size=16, json_layout=True).parent, threads=1)
    assert tagger.json_layout and tagger.input.channels_first
    want = ref_pixels(ref_rgb(odd_images[0]), 16).transpose(2, 0, 1) / 127.5 - 1
    got = tagger.scores(tagger.pixels(load_image(odd_images[0])[0])[None])[0]
    # the outputs of these models are logits: lorakit returns sigmoid(logit)
    np.testing.assert_allclose(got, 1 / (1 + np.exp(-want.reshape(-1))), rtol=1e-6)


def test_batches_give_the_scores_of_single_images(tmp_path, odd_images):
    tagger = load_tagger(conv_tagger(tmp_path / "conv").parent, threads=1)
    batch = np.stack([tagger.pixels(load_image(p)[0]) for p in odd_images])
    together = tagger.scores(batch)
    alone = np.concatenate([tagger.scores(x[None]) for x in batch])
    assert together.std(axis=0).mean() > 0.01  # the scores really depend on the pixels
    np.testing.assert_allclose(together, alone, rtol=1e-5, atol=1e-7)
    # a model whose batch size is fixed at 2 gets full batches: 5 images = 2 + 2 + (1 + padding)
    fixed = load_tagger(conv_tagger(tmp_path / "fixed", batch=2).parent, threads=1)
    assert fixed.input.batch_size == 2
    np.testing.assert_allclose(fixed.scores(batch[:5]), together[:5], rtol=1e-5, atol=1e-7)


def test_reading_ahead_gives_what_reading_in_turn_gives(tmp_path):
    data = _dataset(tmp_path / "data", 5)
    write(data / "bad.png", b"junk")
    runs = [
        run_folder(data, lambda rgb: rgb, lambda b: [f"{x.shape} {x.mean():.3f}" for x in b], lambda _, out: out,
                   extension=".txt", batch_size=2, dry_run=True, read_ahead=ahead)
        for ahead in (False, True)
    ]  # fmt: skip
    assert [(e.path, e.after) for e in runs[0].edits] == [(e.path, e.after) for e in runs[1].edits]
    assert len(runs[1].edits) == 5 and runs[0].failed == runs[1].failed == [
        (data / "bad.png", runs[0].failed[0][1])
    ]


def test_a_model_that_takes_one_image_at_a_time(tmp_path, capsys):
    folder = constant_tagger(tmp_path / "b1", LABELS, batch=1).parent
    data = _dataset(tmp_path / "data", 3)
    code = main(["tag", str(data), "--model", str(folder), "--batch_size", "4", "--threads", "1"])
    out = capsys.readouterr().out
    assert code == 0 and "the model takes 1 image(s) at a time" in out
    assert all((data / f"{i}.txt").read_text() == ", ".join(found()) + "\n" for i in range(3))


# ---- choosing tags ------------------------------------------------------------------------------


def test_thresholds_and_categories(tagger):
    assert _tags_of(tagger) == found()
    assert _tags_of(tagger, general_threshold=0.5, character_threshold=0.85) == found(0.5, 0.85)
    assert _tags_of(tagger, thresh=0.6) == found(0.6, 0.6)
    assert _tags_of(tagger, character_threshold=1.1) == found(0.35, 1.1)  # no character tags
    scores = {t.name: t.score for t in choose_tags(SCORES, tagger.labels, TagOptions())}
    assert scores == pytest.approx({n: s for n, c, s in LABELS if n in found()}, abs=1e-6)


def test_ratings_order_and_trigger(tagger):
    rating = LABELS[int(np.argmax(SCORES[:4]))][0]
    assert rating == "sensitive"
    assert _tags_of(tagger, use_rating_tags=True) == [rating] + found()
    assert _tags_of(tagger, use_rating_tags_as_last_tag=True) == found() + [rating]
    chars = [n for n in found() if dict((n, c) for n, c, _ in LABELS)[n] == "character"]
    assert _tags_of(tagger, character_tags_first=True) == chars + [n for n in found() if n not in chars]
    by_score = sorted(found(), key=lambda n: -dict((n, s) for n, _, s in LABELS)[n])
    assert _tags_of(tagger, sort_by_score=True) == by_score
    # a trigger word the model does not know goes first everywhere; a known tag only where found
    tags = _tags_of(tagger, always_first_tags=["sks", "long_hair", "blue_eyes"], use_rating_tags=True)
    assert tags == ["sks", "long_hair", rating] + [n for n in found() if n != "long_hair"]


def test_undesired_underscores_expansion_and_replacement(tagger):
    assert _tags_of(tagger, undesired_tags=["watermark", "smile"]) == [
        n for n in found() if n not in ("watermark", "smile")
    ]
    spaced = _tags_of(tagger, remove_underscore=True)
    assert spaced == [n.replace("_", " ") if len(n) > 3 else n for n in found()]
    assert "^_^" in spaced and "hatsune miku (vocaloid)" in spaced
    expanded = _tags_of(tagger, character_tag_expand=True)
    assert expanded[expanded.index("hatsune_miku") + 1] == "vocaloid"
    replace = parse_tag_replacement(r"1girl,1woman;long hair,long locks;a\,b,c\;d")
    assert replace == {"1girl": "1woman", "long hair": "long locks", "a,b": "c;d"}
    tags = _tags_of(tagger, remove_underscore=True, tag_replacement=replace)
    assert tags[:2] == ["1woman", "long locks"] and tags[2:] == spaced[2:]  # every other tag unchanged
    with pytest.raises(ConfigError, match="must be OLD,NEW"):
        parse_tag_replacement("1girl")


def test_mcut_per_category(tagger):
    general = SCORES[4:11]
    s = np.sort(general)[::-1]
    gaps = s[:-1] - s[1:]
    want = (s[gaps.argmax()] + s[gaps.argmax() + 1]) / 2
    assert mcut_threshold(general) == pytest.approx(want)
    chars = SCORES[11:]
    char_limit = max(0.15, mcut_threshold(chars))
    expected = [
        n for n, c, x in LABELS if (c == "general" and x >= want) or (c == "character" and x >= char_limit)
    ]
    assert _tags_of(tagger, mcut=True) == expected
    low = SCORES.copy()
    low[11:] = [0.12, 0.05]  # the cut (0.085) is below 0.15: no character tag
    assert [t.category for t in choose_tags(low, tagger.labels, TagOptions(mcut=True))].count(
        "character"
    ) == 0


def test_tag_mapping_json_models(tmp_path):
    labels = [("general", "rating", 0.9), ("explicit", "rating", 0.1), ("masterpiece", "quality", 0.8),
              ("a_b", "general", 0.4), ("c", "general", 0.7), ("who_(show)", "character", 0.5),
              ("show", "copyright", 0.6), ("artist_x", "artist", 0.2)]  # fmt: skip
    tagger = load_tagger(constant_tagger(tmp_path / "cl", labels, json_layout=True).parent, threads=1)
    assert tagger.model_file.name == "model_optimized.onnx"
    opts = TagOptions(use_rating_tags=True, use_quality_tags_as_last_tag=True, tag_replacement={"c": "see"})
    tags = tagger.predict([np.zeros((8, 8, 3), np.uint8)], opts)[0]
    # by score (as sd-scripts for these models), sigmoid of the logits, replacement applied
    assert [t.name for t in tags] == ["general", "see", "show", "who_(show)", "a_b", "masterpiece"]
    assert [t.score for t in tags] == pytest.approx([0.9, 0.7, 0.6, 0.5, 0.4, 0.8], abs=1e-6)


# ---- folders and files --------------------------------------------------------------------------


def test_tag_folder_writes_backs_up_and_appends(tmp_path, tagger):
    data = _dataset(tmp_path / "data", 3)
    write(data / "0.txt", "sks, old_tag, 1girl\n")
    write(data / "1.txt", ", ".join(found()) + "\n")  # already what the tagger writes
    result = tag_folder(data, tagger, TagOptions(always_first_tags=["sks"]), append_tags=True)
    assert (data / "0.txt").read_text() == ", ".join(
        ["sks", "old_tag", "1girl"] + [n for n in found() if n != "1girl"]
    ) + "\n"
    assert (data / "1.txt").read_text() == ", ".join(["sks"] + found()) + "\n"
    assert (data / "2.txt").read_text() == ", ".join(["sks"] + found()) + "\n"
    assert (result.images, len(result.edits), result.backed_up) == (3, 3, 2)
    assert (result.backup / "0.txt").read_text() == "sks, old_tag, 1girl\n"
    assert result.tag_counts["sks"] == 3 and result.tags_per_image == pytest.approx(len(found()) + 1)
    # without append the file is replaced; a file that would not change is left alone
    again = tag_folder(data, tagger, TagOptions())
    assert (data / "0.txt").read_text() == ", ".join(found()) + "\n"
    assert again.backup != result.backup and again.backed_up == 3
    third = tag_folder(data, tagger, TagOptions())
    assert third.unchanged == 3 and third.edits == [] and third.backup is None
    # the backups undo the runs, newest first
    assert main(["tags", "restore", str(data), "--backup", again.backup.name]) == 0
    assert (data / "0.txt").read_text().startswith("sks, old_tag, 1girl, long_hair")
    assert main(["tags", "restore", str(data), "--backup", result.backup.name]) == 0
    assert (data / "0.txt").read_text() == "sks, old_tag, 1girl\n" and not (data / "2.txt").exists()


def test_cli_options_reach_the_tags(tmp_path, tagger, capsys):
    data = _dataset(tmp_path / "data", 2)
    args = ["tag", str(data), "--model", str(tagger.model_file.parent), "--threads", "1", "--remove_underscore",
            "--undesired_tags", "watermark", "--always_first_tags", "sks dog", "--use_rating_tags_as_last_tag",
            "--caption_extension", ".tags", "--tag_replacement", "smile,grin", "--frequency_tags"]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    want = ["sks dog"] + [
        {"smile": "grin"}.get(n, n.replace("_", " ") if len(n) > 3 else n)
        for n in found()
        if n != "watermark"
    ]
    assert (data / "0.tags").read_text() == ", ".join(want + ["sensitive"]) + "\n"
    assert "tagged 2 image(s): 2 tag file(s) written" in out and "tag frequencies:\n  sks dog 2" in out


def test_dry_run_writes_nothing(tmp_path, tagger, capsys):
    data = _dataset(tmp_path / "data", 2)
    write(data / "0.txt", "old\n")
    before = snapshot(tmp_path)
    assert (
        main(["tag", str(data), "--model", str(tagger.model_file.parent), "--dry-run", "--threads", "1"]) == 0
    )
    out = capsys.readouterr().out
    assert snapshot(tmp_path) == before
    assert (
        "before: old" in out
        and f"after:  {', '.join(found())}" in out
        and "dry run: nothing was written." in out
    )


def test_metadata_file_instead_of_tag_files(tmp_path, tagger):
    data = _dataset(tmp_path / "data", 2)
    out = tmp_path / "meta.json"
    result = tag_folder(data, tagger, output_path=out)
    meta = json.loads(out.read_text())
    assert result.metadata_file == out and not list(data.glob("*.txt"))
    assert meta == {
        str((data / f"{i}.png").resolve()): {"tags": ", ".join(found()), "image_size": [20 + 7 * i, 16]}
        for i in range(2)
    }
    tag_folder(data, tagger, output_path=tmp_path / "meta.jsonl")
    lines = [json.loads(line) for line in (tmp_path / "meta.jsonl").read_text().splitlines()]
    assert [line["caption"] for line in lines] == [", ".join(found())] * 2 and lines[1]["image_size"] == [
        27,
        16,
    ]


def test_recursive_kohya_tree_and_corrupt_images(tmp_path, tagger, capsys):
    train = tmp_path / "train"
    _dataset(train / "10_a", 2)
    _dataset(train / "5_b", 1)
    write(train / "5_b" / "broken.png", b"\x89PNG\r\n\x1a\n not really")
    write(train / ".lorakit-backup" / "x" / "old.png", b"")  # dot folders are never tagged
    model = str(tagger.model_file.parent)
    assert main(["tag", str(train), "--model", model]) == 2
    assert "add --recursive" in capsys.readouterr().err
    write(tmp_path / "empty" / "readme.txt", "no pictures here")
    assert main(["tag", str(tmp_path / "empty"), "--model", model, "--onnx"]) == 2
    assert "no images (png, jpg" in capsys.readouterr().err
    before = {k: v for k, v in snapshot(tmp_path).items() if not k.startswith(str(train))}
    code = main(["tag", str(train), "--model", model, "--recursive", "--threads", "1"])
    out = capsys.readouterr().out
    assert code == 1  # a failed image makes the exit code 1, after the others are done
    assert f"FAILED {train / '5_b' / 'broken.png'}: not a readable image" in out
    written = sorted(
        p.relative_to(train).as_posix() for p in train.rglob("*.txt") if ".lorakit-backup" not in p.parts
    )
    assert written == ["10_a/0.txt", "10_a/1.txt", "5_b/0.txt"]
    assert "tagged 3 image(s)" in out and "most frequent tags: 1girl 3" in out
    # nothing written outside DIR
    assert {k: v for k, v in snapshot(tmp_path).items() if not k.startswith(str(train))} == before


def test_offline_without_the_model_names_the_files_and_the_folder(tmp_path, capsys):
    data = _dataset(tmp_path / "data", 1)
    code = main(["tag", str(data), "--model_dir", str(tmp_path / "models")])
    err = capsys.readouterr().err
    assert code == 2
    assert "offline" in err and "model.onnx and selected_tags.csv" in err
    assert str(tmp_path / "models" / "SmilingWolf_wd-v1-4-convnext-tagger-v2") in err
    assert not list(data.glob("*.txt"))
    # put there, the files are found (sd-scripts' layout, so its downloads are used as they are)
    constant_tagger(tmp_path / "models" / "SmilingWolf_wd-v1-4-convnext-tagger-v2", LABELS)
    assert (
        locate_tagger(None, tmp_path / "models")
        == tmp_path / "models" / "SmilingWolf_wd-v1-4-convnext-tagger-v2"
    )
    with pytest.raises(ModelFilesMissing, match="needs a model file"):
        locate_tagger(str(data))


def test_files_from_different_models_are_refused(tmp_path):
    folder = constant_tagger(tmp_path / "m", LABELS).parent
    (folder / "selected_tags.csv").write_text("tag_id,name,category,count\n1,a,0,1\n", encoding="utf-8")
    with pytest.raises(ModelError, match="gives 13 scores but selected_tags.csv lists 1 tags"):
        load_tagger(folder)


def test_list_models(capsys):
    assert main(["tag", "--list-models"]) == 0
    out = capsys.readouterr().out
    for needle in ("SmilingWolf/wd-v1-4-convnext-tagger-v2", "Apache-2.0", "Salesforce/blip-image-captioning-large",
                   "florence-community/Florence-2-base", "microsoft/git-base-coco", "MB"):  # fmt: skip
        assert needle in out
