"""The A1111 "parameters" PNG chunk: written as A1111 writes it, read back, A1111's own text read."""

from PIL import Image

from lorakit.evaluation.pngmeta import (
    GenerationParameters,
    addnet_hash,
    parse_parameters,
    png_info,
    read_parameters,
)

# As A1111 1.10 writes it (schedule type apart, quoted Lora hashes, multi-line negative)
A1111_TEXT = (
    "masterpiece, 1girl, <lora:mystyle:0.8>\n"
    "Negative prompt: lowres,\nbad hands\n"
    "Steps: 28, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1234567, Size: 512x768, "
    'Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Lora hashes: "mystyle: 0123456789ab", '
    "Clip skip: 2, Version: v1.10.1"
)


def test_reads_a1111_text():
    p = parse_parameters(A1111_TEXT)
    assert p.prompt == "masterpiece, 1girl, <lora:mystyle:0.8>"
    assert p.negative_prompt == "lowres,\nbad hands"
    assert (p.steps, p.sampler, p.cfg, p.seed) == (28, "DPM++ 2M Karras", 7.0, 1234567)
    assert (p.width, p.height, p.model_hash, p.model, p.clip_skip) == (
        512,
        768,
        "6ce0161689",
        "v1-5-pruned-emaonly",
        2,
    )
    assert p.lora_hashes == {"mystyle": "0123456789ab"}
    assert p.extra == {"Version": "v1.10.1"}


def test_writes_a1111_layout():
    p = GenerationParameters(
        prompt="a cat <lora:a:0.5>",
        negative_prompt="blurry",
        steps=30,
        sampler="DPM++ 2M Karras",
        cfg=7.0,
        seed=1,
        width=512,
        height=512,
        model_hash="abcdef0123",
        model="base",
        clip_skip=2,
        lora_hashes={"a": "111111111111", "b": "222222222222"},
    )
    assert p.to_text() == (
        "a cat <lora:a:0.5>\nNegative prompt: blurry\n"
        "Steps: 30, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 1, Size: 512x512, Model hash: abcdef0123, "
        'Model: base, Lora hashes: "a: 111111111111, b: 222222222222", Clip skip: 2'
    )
    assert parse_parameters(p.to_text()) == p


def test_clip_skip_1_and_empty_negative_are_left_out():
    text = GenerationParameters(prompt="x", steps=20, sampler="Euler", cfg=7.5, seed=3, clip_skip=1).to_text()
    assert text == "x\nSteps: 20, Sampler: Euler, CFG scale: 7.5, Seed: 3"


def test_png_round_trip_with_cjk(tmp_path):
    p = GenerationParameters(
        prompt="一个女孩, 微笑",
        negative_prompt="低质量",
        steps=4,
        sampler="Euler a",
        cfg=5.5,
        seed=9,
        width=64,
        height=64,
    )
    path = tmp_path / "x.png"
    Image.new("RGB", (8, 8)).save(path, pnginfo=png_info(p))
    assert read_parameters(path) == p
    with Image.open(path) as image:
        assert image.text["parameters"] == p.to_text()


def test_addnet_hash_skips_the_header(tmp_path):
    """Two .safetensors files with the same tensor bytes but different metadata hash the same."""
    import torch
    from safetensors.torch import save_file

    tensors = {"a.lora_down.weight": torch.arange(6.0).reshape(2, 3)}
    save_file(tensors, tmp_path / "one.safetensors", metadata={"ss_output_name": "one"})
    save_file(tensors, tmp_path / "two.safetensors", metadata={"ss_output_name": "two, longer"})
    assert addnet_hash(tmp_path / "one.safetensors") == addnet_hash(tmp_path / "two.safetensors")
    import hashlib

    data = (tmp_path / "one.safetensors").read_bytes()
    n = int.from_bytes(data[:8], "little")
    assert addnet_hash(tmp_path / "one.safetensors") == hashlib.sha256(data[8 + n :]).hexdigest()
