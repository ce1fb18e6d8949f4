"""sd-scripts prompt lines and files, A1111 <lora:...> tags, --lora FILE:WEIGHT:BLOCKS."""

import json
from pathlib import Path

import pytest

from lorakit.evaluation.prompts import (
    PromptError,
    extract_lora_tags,
    load_prompts,
    parse_lora_option,
    parse_prompt_line,
)


def test_prompt_line_options():
    spec = parse_prompt_line(
        "1girl, solo, 微笑 --n lowres, bad hands --w 512 --h 768 --d 42 --s 28 --l 6.5 --ss euler_a"
    )
    assert spec.prompt == "1girl, solo, 微笑"
    assert spec.negative_prompt == "lowres, bad hands"
    assert (spec.width, spec.height, spec.seed, spec.steps, spec.cfg) == (512, 768, 42, 28, 6.5)
    assert spec.sampler == "euler_a"


def test_prompt_line_defaults_and_clamping():
    spec = parse_prompt_line("a cat --s 5000 --cn control.png")
    assert spec.prompt == "a cat"
    assert spec.steps == 1000  # sd-scripts clamps to 1..1000
    assert spec.negative_prompt == "" and spec.seed is None and spec.width is None
    filled = spec.with_defaults(seed=3, steps=20, cfg=7.5)
    assert (filled.seed, filled.steps, filled.cfg) == (3, 1000, 7.5)


def test_bad_number_is_an_error():
    with pytest.raises(PromptError, match="--w wide"):
        parse_prompt_line("a cat --w wide")


def test_txt_toml_json_files(tmp_path):
    txt = tmp_path / "p.txt"
    txt.write_text("# comment\n\na dog --d 1\n  \na cat --n ugly\n", encoding="utf-8")
    assert [(p.prompt, p.seed, p.negative_prompt, p.index) for p in load_prompts(txt)] == [
        ("a dog", 1, "", 0),
        ("a cat", None, "ugly", 1),
    ]
    toml = tmp_path / "p.toml"
    toml.write_text(
        "[prompt]\nwidth = 640\nsample_steps = 20\nscale = 5\n\n"
        '[[prompt.subset]]\nprompt = "猫"\nseed = 7\n\n'
        '[[prompt.subset]]\nprompt = "dog"\nwidth = 320\nnegative_prompt = "bad"\nsample_sampler = "ddim"\n',
        encoding="utf-8",
    )
    specs = load_prompts(toml)
    assert [(p.prompt, p.width, p.steps, p.cfg, p.seed) for p in specs] == [
        ("猫", 640, 20, 5.0, 7),
        ("dog", 320, 20, 5.0, None),
    ]
    assert specs[1].negative_prompt == "bad" and specs[1].sampler == "ddim"
    js = tmp_path / "p.json"
    js.write_text(
        json.dumps(["a fox --h 448", {"prompt": "owl", "height": 256, "scale": 9}]), encoding="utf-8"
    )
    assert [(p.prompt, p.height, p.cfg) for p in load_prompts(js)] == [
        ("a fox", 448, None),
        ("owl", 256, 9.0),
    ]


def test_bad_prompt_files(tmp_path):
    with pytest.raises(PromptError, match="does not exist"):
        load_prompts(tmp_path / "missing.txt")
    bad = tmp_path / "bad.toml"
    bad.write_text("[other]\nx = 1\n")
    with pytest.raises(PromptError, match=r"\[\[prompt.subset\]\]"):
        load_prompts(bad)
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n")
    with pytest.raises(PromptError, match="no prompts"):
        load_prompts(empty)


@pytest.fixture
def lora_dir(tmp_path) -> Path:
    for name in ("style/mystyle.safetensors", "chars/Alice-000002.safetensors", "chars/bob.pt"):
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    return tmp_path


def test_lora_tags_are_resolved_and_removed(lora_dir):
    prompt, loras = extract_lora_tags(
        "masterpiece, <lora:mystyle:0.6>, 1girl <lora:alice-000002:0.8:lbw=OUTALL> <lyco:bob>", lora_dir
    )
    # A1111 cuts out the tag alone: the comma after it stays a token of the encoded prompt
    assert prompt == "masterpiece, , 1girl"
    assert [(r.path.relative_to(lora_dir).as_posix(), r.weight, r.blocks) for r in loras] == [
        ("style/mystyle.safetensors", 0.6, None),
        ("chars/Alice-000002.safetensors", 0.8, "OUTALL"),
        ("chars/bob.pt", 1.0, None),
    ]
    _, loras = extract_lora_tags("<lora:mystyle:1:1,0,0,0,0,0,0,0,1,1,1,1,1,1,1,1,1>", lora_dir)
    assert loras[0].blocks == "1,0,0,0,0,0,0,0,1,1,1,1,1,1,1,1,1"
    assert loras[0].tag() == "<lora:mystyle:1:lbw=1,0,0,0,0,0,0,0,1,1,1,1,1,1,1,1,1>"


def test_lora_tag_errors(lora_dir):
    with pytest.raises(PromptError, match="Did you mean mystyle"):
        extract_lora_tags("<lora:mystyel:1>", lora_dir)
    with pytest.raises(PromptError, match="DyLoRA's rank"):
        extract_lora_tags("<lora:mystyle:1:0.5:8>", lora_dir)
    with pytest.raises(PromptError, match="start step is not supported"):
        extract_lora_tags("<lora:mystyle:1:start=10>", lora_dir)
    with pytest.raises(PromptError, match="unknown setting 'unte='"):
        extract_lora_tags("<lora:mystyle:unte=1>", lora_dir)
    with pytest.raises(PromptError, match="two block-weight settings"):
        extract_lora_tags("<lora:mystyle:1:OUTALL:lbw=INS>", lora_dir)
    with pytest.raises(PromptError, match="'x' is not a number"):
        extract_lora_tags("<lora:mystyle:1:unet=x>", lora_dir)
    with pytest.raises(PromptError, match="--lora-dir"):
        extract_lora_tags("<lora:mystyle:1>", None)


@pytest.mark.parametrize(
    "tag, te, unet, blocks",
    [
        ("<lora:mystyle:0.8:0.5>", 0.8, 0.5, None),  # A1111: positional TE then U-Net
        ("<lora:mystyle:0.8>", 0.8, 0.8, None),  # one number: both
        ("<lora:mystyle:unet=0.3>", 1.0, 0.3, None),  # TE stays at its default 1
        ("<lora:mystyle:te=0.4>", 0.4, 0.4, None),  # U-Net defaults to the TE strength
        ("<lora:mystyle:te=0.2:unet=0:lbw=OUTALL>", 0.2, 0.0, "OUTALL"),
        (
            "<lora:mystyle:1:0:lbw=1,0,0,0,0,0,0,0,1,1,1,1,1,1,1,1,1>",
            1.0,
            0.0,
            "1,0,0,0,0,0,0,0,1,1,1,1,1,1,1,1,1",
        ),
        ("<lora:mystyle:0.7:0.6:INS>", 0.7, 0.6, "INS"),
    ],
)
def test_separate_text_encoder_and_unet_strengths(lora_dir, tag, te, unet, blocks):
    _, (ref,) = extract_lora_tags(f"a cat {tag}", lora_dir)
    assert (ref.weight, ref.unet, ref.blocks) == (te, unet, blocks)
    # the tag written into the PNG reads back to the same strengths
    _, (again,) = extract_lora_tags(ref.tag(), lora_dir)
    assert (again.weight, again.unet, again.blocks) == (te, unet, blocks)


def test_lora_option(lora_dir):
    path = lora_dir / "style" / "mystyle.safetensors"
    assert parse_lora_option(str(path)).weight == 1.0
    ref = parse_lora_option(f"{path}:0.75:OUTS")
    assert (ref.path, ref.weight, ref.blocks) == (path, 0.75, "OUTS")
    assert parse_lora_option(f"{path}:-0.5").weight == -0.5
    ref = parse_lora_option(f"{path}:1:0.25")
    assert (ref.weight, ref.unet, ref.blocks) == (1.0, 0.25, None)
    ref = parse_lora_option(f"{path}:unet=0:lbw=OUTALL")
    assert (ref.weight, ref.unet, ref.blocks) == (1.0, 0.0, "OUTALL")
    assert ref.tag() == "<lora:mystyle:1:0:lbw=OUTALL>"
    with pytest.raises(PromptError, match="does not exist"):
        parse_lora_option(str(lora_dir / "nope.safetensors") + ":1")
    with pytest.raises(PromptError, match="not a number"):
        parse_lora_option(f"{path}:heavy")
