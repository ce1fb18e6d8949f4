"""The three dataset tools through `lorakit.cli.main.main`: dataset check, prep resize, tags."""

import io
import json
import math

import numpy as np
import pytest
from datagen import noise_image, snapshot, write
from PIL import Image

from lorakit.cli.main import main


@pytest.fixture
def tree(tmp_path):
    dog = tmp_path / "train" / "10_sks dog"
    for i, size in enumerate([(64, 64), (96, 64), (64, 96)]):
        noise_image(dog / f"{i}.png", size, i)
    write(dog / "0.txt", "sks dog, sitting, grass")
    write(dog / "1.txt", "sks dog, grass")
    return tmp_path


def test_dataset_check_prints_the_plan(tree, capsys):
    before = snapshot(tree)
    code = main(
        [
            "dataset",
            "check",
            str(tree / "train"),
            "--resolution",
            "64",
            "--caption_extension",
            ".txt",
            "--train_batch_size",
            "2",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "resolution 64x64, batch size 2" in out
    assert "[train] 10_sks dog: 3 images x 10 repeats = 30 per epoch" in out
    assert "captions: 2 from .txt files; 1 without a caption file (class tokens 'sks dog' used)" in out
    assert "tags: 3 different; most used: sks dog 3/3, grass 2/3, sitting 1/3" in out
    # no bucketing: one 64x64 bucket with 30 samples -> ceil(30 / 2) = 15 steps
    assert "64x64" in out and "steps per epoch: 15" in out
    assert "Result: ready to train." in out
    assert snapshot(tree) == before


def test_dataset_check_json_with_buckets_from_a_toml(tree, capsys):
    toml_text = f"""[general]
caption_extension = ".txt"
[[datasets]]
resolution = 64
enable_bucket = true
min_bucket_reso = 32
max_bucket_reso = 128
bucket_reso_steps = 16
[[datasets.subsets]]
image_dir = '{tree / "train" / "10_sks dog"}'
num_repeats = 3
"""
    toml = write(tree / "ds.toml", toml_text + 'class_tokens = "sks dog"\n')
    assert main(["dataset", "check", str(toml), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    ds = report["datasets"][0]
    # 64x64 -> 64x64; 96x64 (1.5) -> 80x48 (1.667) beats 64x64; 64x96 -> 48x80. 3 repeats each.
    assert ds["buckets"] == {"48x80": 3, "64x64": 3, "80x48": 3}
    assert report["steps_per_epoch"] == 9
    assert ds["subsets"][0]["captions"] == {"file": 2, "class_tokens": 1}

    # without class_tokens the image with no caption file cannot be trained
    write(toml, toml_text)
    assert main(["dataset", "check", str(toml), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    (error,) = [p for p in report["problems"] if p["level"] == "error"]
    assert "1 image(s) have no caption file (.txt) and the subset has no class_tokens" in error["message"]


def test_prep_resize(tmp_path, capsys):
    src = tmp_path / "src"
    noise_image(src / "10_a" / "big.png", (1000, 600), 1)
    noise_image(src / "10_a" / "small.jpg", (100, 70), 2)
    noise_image(src / "10_a" / "alpha.png", (300, 200), 3, mode="RGBA")
    write(src / "10_a" / "big.txt", "caption of big")
    write(src / "10_a" / "big_0512x0512_sd.npz", b"old cache")
    write(src / "10_a" / "broken.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    write(src / "10_a" / "broken.txt", "caption of an image that cannot be read")
    write(src / "10_a" / "gone.txt", "caption of an image deleted long ago")
    write(src / "10_a" / "notes.md", "not a caption: copied")
    before = snapshot(src)
    dst = tmp_path / "out"
    code = main(["prep", "resize", str(src), str(dst), "--max", "512x512", "--divisible", "64"])
    out = capsys.readouterr().out
    assert code == 1  # one image failed; the others are done
    assert f"FAILED {src / '10_a' / 'broken.png'}:" in out
    # 1000x600 = 600000 px > 512*512 = 262144: factor sqrt(262144/600000) = 0.6610
    s = math.sqrt(262144 / 600000)
    w, h = int(1000 * s), int(600 * s)  # 661 x 396
    assert Image.open(dst / "10_a" / "big.png").size == (w - w % 64, h - h % 64) == (640, 384)
    # small images are only cropped to multiples of 64: 100x70 -> 64x64
    assert Image.open(dst / "10_a" / "small.jpg").size == (64, 64)
    # 300x200 = 60000 px: no shrink; crop to 256x192 keeping transparency
    alpha = Image.open(dst / "10_a" / "alpha.png")
    assert alpha.size == (256, 192) and alpha.mode == "RGBA"
    assert (dst / "10_a" / "big.txt").read_text() == "caption of big"
    assert not (dst / "10_a" / "big_0512x0512_sd.npz").exists()
    assert "1000x600 -> 640x384" in out
    # a caption goes only with its image: no orphans in the new folder
    assert not (dst / "10_a" / "broken.txt").exists() and not (dst / "10_a" / "gone.txt").exists()
    assert f"skipped {src / '10_a' / 'broken.txt'}: caption not copied: its image could not be read" in out
    assert f"skipped {src / '10_a' / 'gone.txt'}: caption not copied: no image has its name" in out
    assert (dst / "10_a" / "notes.md").exists()
    # a crop that cuts away more than 20% of a side is reported, with the alternative: 100 -> 64 = 36%
    assert f"cropped {src / '10_a' / 'small.jpg'}: 36% of its width cut away (100 -> 64 px)" in out
    assert "--pad COLOUR keeps the whole picture" in out
    assert "alpha.png: " not in out.split("cropped", 1)[1]  # 300 -> 256 is 15%: not reported
    assert snapshot(src) == before  # the source is never touched
    # the crop is centred: compare with an independent PIL computation
    expected = Image.open(src / "10_a" / "big.png").convert("RGB").resize((w, h), Image.Resampling.BOX)
    left, top = (w - 640) // 2, (h - 384) // 2
    expected = np.asarray(expected.crop((left, top, left + 640, top + 384)))
    np.testing.assert_array_equal(np.asarray(Image.open(dst / "10_a" / "big.png")), expected)

    # a second run refuses to overwrite, unless asked
    assert main(["prep", "resize", str(src), str(dst)]) == 2
    assert "already exist" in capsys.readouterr().err
    assert main(["prep", "resize", str(src), str(dst), "--overwrite", "--format", "png"]) == 1
    assert (dst / "10_a" / "small.png").exists()
    # --pad letterboxes instead: 100x70 -> 128x128 with the picture in the middle, nothing cut
    padded = tmp_path / "padded"
    capsys.readouterr()
    assert main(["prep", "resize", str(src), str(padded), "--pad", "#102030"]) == 1
    assert "cropped" not in capsys.readouterr().out
    expected = Image.new("RGB", (128, 128), (16, 32, 48))
    expected.paste(Image.open(src / "10_a" / "small.jpg").convert("RGB"), (14, 29))  # (128-100)/2, (128-70)/2
    buffer = io.BytesIO()
    expected.save(buffer, format="JPEG", quality=95)
    small = Image.open(padded / "10_a" / "small.jpg")
    assert small.size == (128, 128)
    np.testing.assert_array_equal(np.asarray(small), np.asarray(Image.open(buffer)))
    # a destination inside the source is refused
    assert main(["prep", "resize", str(src), str(src / "out")]) == 2
    assert "inside the source folder" in capsys.readouterr().err


def captions(folder):
    return {p.name: p.read_text() for p in sorted(folder.glob("*.txt"))}


def test_tags_add_trigger_once_with_dry_run_backup_and_restore(tmp_path, capsys):
    d = tmp_path / "10_x"
    write(d / "a.txt", "1girl, solo, sks\n")
    write(d / "b.txt", "sks, smile")
    write(d / "c.txt", "smile, smile, outdoors")
    for name in "abc":
        noise_image(d / f"{name}.png", (8, 8))
    noise_image(d / "nocap.png", (8, 8))
    original = captions(d)

    before = snapshot(tmp_path)
    assert main(["tags", "add", str(d), "sks", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "dry run: 2 file(s) would change; nothing was written." in out
    assert "before: 1girl, solo, sks" in out and "after:  sks, 1girl, solo" in out
    assert snapshot(tmp_path) == before

    assert main(["tags", "add", str(d), "sks"]) == 0
    out = capsys.readouterr().out
    assert captions(d) == {
        "a.txt": "sks, 1girl, solo\n",
        "b.txt": "sks, smile",
        "c.txt": "sks, smile, smile, outdoors",
    }
    backups = list((d / ".lorakit-backup").iterdir())
    assert len(backups) == 1
    assert {p.name: p.read_text() for p in backups[0].iterdir()} == {
        "a.txt": original["a.txt"],
        "c.txt": original["c.txt"],
    }
    assert f"lorakit tags restore {d} --backup {backups[0].name}" in out

    # adding again changes nothing: the trigger is there once
    assert main(["tags", "add", str(d), "sks"]) == 0
    assert "nothing to change." in capsys.readouterr().out

    assert main(["tags", "restore", str(d)]) == 0
    assert captions(d) == original


def test_tags_remove_replace_dedup_and_create_missing(tmp_path, capsys):
    d = tmp_path / "imgs"
    write(d / "a.caption", "red hair, long hair, red hair, smile")
    write(d / "b.caption", "long hair, blush")
    noise_image(d / "a.png", (8, 8))
    noise_image(d / "b.jpg", (8, 8))
    noise_image(d / "new.png", (8, 8))
    read = lambda: {p.name: p.read_text() for p in sorted(d.glob("*.caption"))}  # noqa: E731
    assert main(["tags", "dedup", str(d)]) == 0
    assert read()["a.caption"] == "red hair, long hair, smile"
    assert main(["tags", "replace", str(d), "long hair", "very long hair"]) == 0
    assert read() == {"a.caption": "red hair, very long hair, smile", "b.caption": "very long hair, blush"}
    assert main(["tags", "remove", str(d), "blush", "smile"]) == 0
    assert read() == {"a.caption": "red hair, very long hair", "b.caption": "very long hair"}
    assert main(["tags", "add", str(d), "sks", "--end", "--create-missing"]) == 0
    assert read() == {
        "a.caption": "red hair, very long hair, sks",
        "b.caption": "very long hair, sks",
        "new.caption": "sks\n",
    }
    capsys.readouterr()
    # restore the newest backup: the file made by --create-missing goes away again
    assert main(["tags", "restore", str(d)]) == 0
    assert "removed 1 created file(s)" in capsys.readouterr().out
    assert read() == {"a.caption": "red hair, very long hair", "b.caption": "very long hair"}
    assert len(list((d / ".lorakit-backup").iterdir())) == 4


def test_tags_stats_and_unreadable_files(tmp_path, capsys):
    d = tmp_path / "imgs"
    write(d / "a.txt", "sks, smile, hat")
    write(d / "b.txt", "sks, smile")
    write(d / "c.txt", "sks")
    write(d / "bad.txt", "caf\xe9".encode("latin-1"))
    write(d / "readme.txt", "not a caption: no image has this name")
    for name in "abc":
        noise_image(d / f"{name}.png", (8, 8))
    noise_image(d / "bad.png", (8, 8))
    assert main(["tags", "stats", str(d)]) == 1  # an unreadable file is reported
    out = capsys.readouterr().out
    assert "3 caption files, 3 different tags" in out
    lines = [line.split() for line in out.splitlines() if line.startswith("  ")]
    assert lines[:3] == [["sks", "3", "100.0%"], ["smile", "2", "66.7%"], ["hat", "1", "33.3%"]]
    assert f"NOT READ {d / 'bad.txt'}: caption file is not UTF-8 text" in out
    before = snapshot(tmp_path)
    assert main(["tags", "add", str(d), "x"]) == 1
    assert "NOT CHANGED" in capsys.readouterr().out
    assert (d / "bad.txt").read_bytes() == "caf\xe9".encode("latin-1")
    assert (d / "readme.txt").read_text() == "not a caption: no image has this name"
    assert snapshot(tmp_path) != before  # the other three did change


def test_tags_needs_a_choice_when_both_caption_kinds_exist(tmp_path, capsys):
    write(tmp_path / "a.txt", "x")
    write(tmp_path / "b.caption", "y")
    noise_image(tmp_path / "a.png", (8, 8))
    noise_image(tmp_path / "b.png", (8, 8))
    assert main(["tags", "stats", str(tmp_path)]) == 2
    assert "choose one with --caption_extension" in capsys.readouterr().err
