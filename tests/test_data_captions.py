"""Caption files and every caption option, checked over many draws."""

import random
from collections import Counter

import pytest
from datagen import noise_image, write

from lorakit.cli.main import main
from lorakit.data import build_datasets, config_from_dict, config_from_folders
from lorakit.data.captions import (
    CaptionError,
    caption_path,
    metadata_caption,
    process_caption,
    read_caption_file,
)
from lorakit.data.check import check_dataset
from lorakit.data.config import SubsetConfig
from lorakit.errors import DatasetError

TAGS = "a, b, c, d, e, f, g, h"


def run(caption, n=100, seed=0, **opts):
    subset = SubsetConfig(**opts)
    rng = random.Random(seed)
    return [process_caption(caption, subset, rng) for _ in range(n)]


def tags(caption):
    return [t.strip() for t in caption.split(",") if t.strip()]


def test_no_options_keeps_the_caption():
    assert set(run(TAGS, 10)) == {TAGS}


def test_shuffle_caption_permutes_all_tags():
    out = run(TAGS, shuffle_caption=True)
    assert all(sorted(tags(c)) == sorted(tags(TAGS)) for c in out)
    assert len(set(out)) > 50  # 8! orders: 100 draws are nearly all different


def test_keep_tokens_keeps_the_first_tags_in_place_over_100_shuffles():
    out = run(TAGS, shuffle_caption=True, keep_tokens=2)
    assert all(tags(c)[:2] == ["a", "b"] for c in out)
    assert all(sorted(tags(c)[2:]) == ["c", "d", "e", "f", "g", "h"] for c in out)
    assert len({tuple(tags(c)[2:]) for c in out}) > 50


def test_keep_tokens_separator_fixes_the_front_and_the_end():
    caption = "sks, dog ||| a, b, c, d ||| masterpiece"
    out = run(caption, shuffle_caption=True, keep_tokens_separator="|||")
    for c in out:
        t = tags(c)
        assert t[:2] == ["sks", "dog"] and t[-1] == "masterpiece"
        assert sorted(t[2:-1]) == ["a", "b", "c", "d"]
        assert "|||" not in c
    assert len({c for c in out}) > 10
    # without shuffling the separator is still removed (sd-scripts would leave it in the caption)
    assert run(caption, 1, keep_tokens_separator="|||") == ["sks, dog, a, b, c, d, masterpiece"]


def test_secondary_separator_keeps_words_together_then_becomes_the_separator():
    out = run("red;;;hair, blue;;;eyes, smile", shuffle_caption=True, secondary_separator=";;;")
    assert all(sorted(tags(c)) == ["blue", "eyes", "hair", "red", "smile"] for c in out)
    for c in out:
        assert "red,hair" in c and "blue,eyes" in c  # never split apart by the shuffle


def test_prefix_and_suffix():
    assert run("a, b", 1, caption_prefix="photo of", caption_suffix="best quality") == [
        "photo of a, b best quality"
    ]


def test_wildcards_pick_one_option_and_braces_can_be_escaped():
    out = run("a {red|green|blue} ball, {{literal}}", 300, enable_wildcard=True)
    counts = Counter(out)
    assert set(counts) == {f"a {c} ball, {{literal}}" for c in ("red", "green", "blue")}
    assert min(counts.values()) > 60  # about 100 each
    # without enable_wildcard the text is left as it is
    assert run("a {red|blue} ball", 1) == ["a {red|blue} ball"]


def test_multi_line_caption_gives_a_random_line_with_wildcards_else_the_first():
    text = "first line\nsecond line\nthird line"
    assert Counter(run(text, 300, enable_wildcard=True)).keys() == {"first line", "second line", "third line"}
    assert set(run(text, 20)) == {"first line"}


def test_caption_dropout_rate():
    out = run(TAGS, 2000, caption_dropout_rate=0.3)
    dropped = out.count("")
    # binomial(2000, 0.3): mean 600, sd 20.5 -> 6 sd bounds
    assert 477 < dropped < 723
    assert set(out) == {"", TAGS}
    assert "" not in run(TAGS, 500, caption_dropout_rate=0.0)


def test_caption_dropout_every_n_epochs():
    subset = SubsetConfig(caption_dropout_every_n_epochs=3)
    got = [process_caption(TAGS, subset, random.Random(0), epoch=e) for e in range(1, 8)]
    assert [g == "" for g in got] == [False, False, True, False, False, True, False]


def test_caption_tag_dropout_spares_the_kept_tags():
    out = run(TAGS, 1000, keep_tokens=1, caption_tag_dropout_rate=0.5)
    assert all(tags(c)[0] == "a" for c in out)
    kept = sum(len(tags(c)) - 1 for c in out)
    # 7 droppable tags x 1000 x 0.5 = 3500 kept on average, sd 42
    assert 3250 < kept < 3750
    assert all(tags(c)[1:] == sorted(tags(c)[1:]) for c in out)  # order kept without shuffle


def test_token_warmup():
    subset = SubsetConfig(token_warmup_min=1, token_warmup_step=10)
    n = lambda step: len(tags(process_caption(TAGS, subset, random.Random(0), step=step)))  # noqa: E731
    # tags used = floor(step * (8 - 1) / 10) + 1
    assert [n(s) for s in (0, 1, 2, 5, 9, 10, 50)] == [1, 1, 2, 4, 7, 8, 8]
    # a fraction below 1 is a share of all steps: 0.5 of 20 = 10, so the same numbers
    frac = SubsetConfig(token_warmup_min=1, token_warmup_step=0.5)
    assert len(tags(process_caption(TAGS, frac, random.Random(0), step=5, max_train_steps=20))) == 4
    # warm-up keeps the kept tags and cuts the others from the end
    keep = SubsetConfig(keep_tokens=2, token_warmup_min=1, token_warmup_step=10)
    assert process_caption(TAGS, keep, random.Random(0), step=0) == "a, b, c"


def test_caption_files_utf8_with_and_without_bom(tmp_path):
    write(tmp_path / "a.txt", "\ufeffsks dog, 可爱\r\n\r\nsecond\r\n")
    write(tmp_path / "b.txt", "plain, text")
    assert read_caption_file(tmp_path / "a.txt") == "sks dog, 可爱\nsecond"
    assert read_caption_file(tmp_path / "b.txt") == "plain, text"


def test_non_utf8_caption_names_the_file(tmp_path):
    path = write(tmp_path / "c.txt", "café, 1girl".encode("cp1252"))
    with pytest.raises(CaptionError) as e:
        read_caption_file(path)
    assert str(path) in str(e.value)
    assert "not UTF-8 text (byte 0xe9 at position 3)" in str(e.value)
    assert "save it with the encoding UTF-8" in str(e.value)


def test_caption_path_finds_face_crop_names(tmp_path):
    write(tmp_path / "photo.caption", "x")
    assert caption_path(tmp_path / "photo_10_20_30_40.png", ".caption") == tmp_path / "photo.caption"
    assert caption_path(tmp_path / "photo.png", "caption") == tmp_path / "photo.caption"
    assert caption_path(tmp_path / "other.png", ".caption") is None


def test_metadata_caption_and_tags():
    s = SubsetConfig()
    assert metadata_caption({"caption": "a photo", "tags": "dog, grass"}, s) == "a photo,dog, grass"
    assert metadata_caption({"tags": "dog, grass"}, s) == "dog, grass"
    w = SubsetConfig(enable_wildcard=True)
    assert metadata_caption({"caption": "one\ntwo", "tags": "x\ny"}, w) == "one,x,y\ntwo,x,y"


def test_fine_tuning_metadata_subset(tmp_path):
    noise_image(tmp_path / "imgs" / "p1.png", (64, 64), 1)
    noise_image(tmp_path / "imgs" / "p2.jpg", (64, 64), 2)
    meta = write(
        tmp_path / "meta.json",
        '{"p1": {"caption": "first"}, "p2": {"tags": "t1, t2"}, "p3": {"caption": "x"}}',
    )
    config = config_from_dict(
        {
            "datasets": [
                {
                    "resolution": 64,
                    "subsets": [{"metadata_file": str(meta), "image_dir": str(tmp_path / "imgs")}],
                }
            ]
        }
    )
    group = build_datasets(config, strict=False)
    assert sorted((r.path.name, r.caption) for _, _, r in group.records()) == [
        ("p1.png", "first"),
        ("p2.jpg", "t1, t2"),
    ]
    (err,) = group.problems.errors
    assert err.path == meta and "no image for the entry 'p3'" in err.message


def test_dataset_captions_are_reproducible_per_epoch_and_vary_across_epochs(tmp_path):
    for i in range(4):
        noise_image(tmp_path / "5_x" / f"{i}.png", (64, 64), i)
        write(tmp_path / "5_x" / f"{i}.caption", TAGS)
    raw = {
        "datasets": [
            {
                "resolution": 64,
                "subsets": [{"image_dir": str(tmp_path / "5_x"), "shuffle_caption": True, "keep_tokens": 1}],
            }
        ]
    }
    g1 = build_datasets(config_from_dict(raw), seed=7)
    g2 = build_datasets(config_from_dict(raw), seed=7)
    e1 = [g1.caption(ref, 0) for ref in g1.epoch_batches(1)]
    assert e1 == [g2.caption(ref, 0) for ref in g2.epoch_batches(1)]
    assert e1 != [g1.caption(ref, 0) for ref in g1.epoch_batches(2)]
    assert all(c.startswith("a, ") for c in e1)


# ---- captions under another extension than caption_extension -------------------------------


def txt_folder(root, images=3, name="5_sks dog"):
    """A kohya tree whose captions are .txt files, as most taggers write them."""
    folder = root / "train" / name
    for i in range(images):
        noise_image(folder / f"{i}.png", (64, 64), i)
        write(folder / f"{i}.txt", f"sks dog, photo {i}")
    return root / "train"


def test_captions_under_another_extension_stop_training_and_name_the_fix(tmp_path, capsys):
    train = txt_folder(tmp_path)
    config = config_from_folders(train, options={"resolution": 64})  # caption_extension: sd-scripts' .caption
    with pytest.raises(DatasetError) as stop:
        build_datasets(config)
    text = str(stop.value)
    assert "3 of 3 image(s) have no .caption caption file but a .txt file beside them (e.g. 0.txt)" in text
    assert "would train on the class tokens 'sks dog' alone" in text
    assert 'set caption_extension = ".txt"' in text and "ignore_other_captions = true" in text
    # lorakit dataset check says the same and fails; with the extension set it is ready
    assert main(["dataset", "check", str(train), "--resolution", "64"]) == 1
    assert 'set caption_extension = ".txt"' in capsys.readouterr().out
    assert main(["dataset", "check", str(train), "--resolution", "64", "--caption_extension", ".txt"]) == 0
    assert "captions: 3 from .txt files" in capsys.readouterr().out
    plan = check_dataset(train, options={"resolution": 64, "caption_extension": ".txt"})
    assert plan.datasets[0].subsets[0].captions == Counter({"file": 3})


def test_ignore_other_captions_trains_on_the_class_tokens_on_purpose(tmp_path, capsys):
    train = txt_folder(tmp_path)
    config = config_from_folders(train, options={"resolution": 64, "ignore_other_captions": True})
    group = build_datasets(config)
    assert {r.caption for _, _, r in group.records()} == {"sks dog"}
    assert main(["dataset", "check", str(train), "--resolution", "64", "--ignore_other_captions"]) == 0
    assert "3 without a caption file (class tokens 'sks dog' used)" in capsys.readouterr().out


def test_a_few_captions_under_another_extension_are_named_for_renaming(tmp_path):
    train = txt_folder(tmp_path)
    folder = train / "5_sks dog"
    (folder / "2.txt").rename(folder / "2.caption")  # one tagger run wrote .caption
    config = config_from_folders(train, options={"resolution": 64, "caption_extension": ".txt"})
    problems = build_datasets(config, strict=False).problems
    (message,) = [p.message for p in problems.errors]
    assert message.startswith("1 of 3 image(s) have no .txt caption file but a .caption file beside them")
    assert "give them .txt names like the other 2 caption(s) of this folder, e.g. 2.txt" in message


def test_caption_files_without_an_image_are_a_warning(tmp_path, capsys):
    train = txt_folder(tmp_path)
    folder = train / "5_sks dog"
    write(folder / "deleted.txt", "sks dog, the picture was deleted")
    noise_image(folder / "face_12_34_56_78.png", (64, 64), 9)  # a face-crop name: its caption is face.txt
    write(folder / "face.txt", "sks dog, face")
    config = config_from_folders(train, options={"resolution": 64, "caption_extension": ".txt"})
    problems = build_datasets(config).problems  # a warning: training goes on
    (warning,) = [p for p in problems.warnings if p.path == folder]
    assert warning.message.startswith(
        "1 caption file(s) have no image of their name beside them: deleted.txt."
    )
    assert main(["dataset", "check", str(train), "--resolution", "64", "--caption_extension", ".txt"]) == 0
    assert "deleted.txt" in capsys.readouterr().out
