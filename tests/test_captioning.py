"""`lorakit caption` with tiny BLIP, Florence-2 and GIT models built in the test (the real
transformers classes, small configs, random weights, processors written locally)."""

import json

import pytest
from datagen import noise_image, snapshot, write
from tagging_helpers import tiny_blip, tiny_florence2, tiny_git

from lorakit.cli.main import main
from lorakit.data.images import load_image
from lorakit.data.tagging import CaptionOptions, caption_folder, load_captioner, with_prefix_suffix
from lorakit.errors import ConfigError, ModelError

BUILDERS = {"blip": tiny_blip, "florence2": tiny_florence2, "git": tiny_git}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("captioners")
    return {family: build(root / family) for family, build in BUILDERS.items()}


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "data"
    for i in range(4):
        noise_image(folder / f"{i}.png", (24 + 9 * i, 30), i)
    return folder


@pytest.mark.parametrize("family", list(BUILDERS))
def test_caption_writes_one_file_per_image_with_prefix_and_suffix(family, models, images, capsys):
    code = main(["caption", str(images), "--model", str(models[family]), "--prefix", "sks dog", "--suffix",
                 "best quality", "--beam_search", "--num_beams", "2", "--max_length", "12", "--batch_size", "3"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0 and f"({family}, cpu, float32)" in out
    files = sorted(images.glob("*.caption"))
    assert [f.stem for f in files] == ["0", "1", "2", "3"] and not list(images.glob("*.txt"))
    for f in files:
        text = f.read_text(encoding="utf-8")
        assert text.startswith("sks dog, ") and text.endswith(", best quality\n") and text.count("\n") == 1
        assert len(text) > len("sks dog, , best quality\n")


@pytest.mark.parametrize("family", list(BUILDERS))
def test_batching_gives_the_captions_of_batch_1(family, models, images):
    captioner = load_captioner(models[family])
    assert captioner.family == family
    rgbs = [load_image(p)[0] for p in sorted(images.glob("*.png"))]
    options = CaptionOptions(beam_search=True, num_beams=2, max_length=12)
    alone = [captioner.caption([im], options)[0] for im in rgbs]
    assert captioner.caption(rgbs, options) == alone
    assert len(set(alone)) > 1  # the images get different captions, so a mix-up would show


def test_blip_sampling_is_kohyas_default_and_repeatable(models, images):
    captioner = load_captioner(models["blip"])
    kw = captioner._generate_kwargs(CaptionOptions())
    assert kw == {
        "do_sample": True,
        "top_p": 0.9,
        "num_beams": 1,
        "repetition_penalty": 1.1,
        "max_length": 75,
        "min_length": 5,
    }
    first = caption_folder(images, captioner, dry_run=True, batch_size=2)
    second = caption_folder(images, captioner, dry_run=True, batch_size=2)
    assert [e.after for e in first.edits] == [e.after for e in second.edits] and len(first.edits) == 4
    assert all(e.path.suffix == ".caption" for e in first.edits) and not list(images.glob("*.caption"))


def test_blip_prompt_is_left_out_and_florence_tasks(models, images):
    blip = load_captioner(models["blip"])
    rgb = [load_image(images / "0.png")[0]]
    caption = blip.caption(rgb, CaptionOptions(beam_search=True, prompt="a picture of", max_length=12))[0]
    assert caption and not caption.startswith("a picture of")
    florence = load_captioner(models["florence2"])
    for task in ("<DETAILED_CAPTION>", "<MORE_DETAILED_CAPTION>"):
        assert florence.caption(rgb, CaptionOptions(task=task, max_length=8))[0]
    with pytest.raises(ConfigError, match="--task must be one of"):
        florence.caption(rgb, CaptionOptions(task="<OD>"))
    with pytest.raises(ConfigError, match="BLIP models only"):
        florence.caption(rgb, CaptionOptions(prompt="a picture of"))


def test_existing_captions_are_backed_up_and_nothing_is_written_outside(models, images):
    write(images / "0.caption", "an old caption\n")
    before = {k: v for k, v in snapshot(images.parent).items() if not k.startswith(str(images))}
    result = caption_folder(
        images, load_captioner(models["git"]), CaptionOptions(max_length=10), prefix="sks"
    )
    assert result.backed_up == 1 and (result.backup / "0.caption").read_text() == "an old caption\n"
    assert all(e.after.startswith("sks, ") for e in result.edits)
    assert {k: v for k, v in snapshot(images.parent).items() if not k.startswith(str(images))} == before


def test_prefix_and_suffix_punctuation():
    assert with_prefix_suffix("a dog", "sks dog", "photo") == "sks dog, a dog, photo"
    assert with_prefix_suffix("a dog", "photo of sks,", ". by sks") == "photo of sks, a dog. by sks"
    assert with_prefix_suffix("a dog") == "a dog"


def test_offline_without_the_model_and_foreign_models(tmp_path, images, capsys):
    code = main(["caption", str(images), "--model_dir", str(tmp_path / "models")])
    err = capsys.readouterr().err
    assert (
        code == 2
        and "offline" in err
        and "config.json, model.safetensors, preprocessor_config.json, tokenizer.json and tokenizer_config.json"
        in err
    )
    assert str(tmp_path / "models" / "Salesforce_blip-image-captioning-large") in err
    remote = write(
        tmp_path / "ms" / "config.json", json.dumps({"model_type": "florence2", "auto_map": {"x": "y"}})
    )
    with pytest.raises(ModelError, match="florence-community/Florence-2-base"):
        load_captioner(remote.parent)
    write(tmp_path / "clip" / "config.json", json.dumps({"model_type": "clip"}))
    with pytest.raises(ModelError, match="'clip' model; lorakit captions with BLIP, Florence-2 or GIT"):
        load_captioner(tmp_path / "clip")
