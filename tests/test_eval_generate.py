"""Generating with networks applied by lorakit: weight 0 is the base image, weight w is the base
with the delta merged at w by hand, and the pipeline is built once."""

import numpy as np
import pytest
import torch
from eval_helpers import merge_by_hand, write_lora
from safetensors.torch import load_file, save_file

from lorakit.cli.main import main
from lorakit.evaluation import generate as generate_module
from lorakit.evaluation.generate import GenerationError, GenerationSettings, Generator, settings_for_prompt
from lorakit.evaluation.pngmeta import addnet_hash, read_parameters
from lorakit.evaluation.prompts import LoraRef, PromptSpec
from lorakit.models.load import load_model


def pixels(generated) -> np.ndarray:
    return np.asarray(generated.image).astype(np.int16)


def request(**kw) -> GenerationSettings:
    # 32 px: attention over 16x16 latents keeps each image well under a second on one CPU thread
    base = dict(
        prompt="a photo of a cat", negative_prompt="blurry", sampler="Euler a", steps=3, cfg=6.0, seed=11
    )
    base.update(width=32, height=32)
    return GenerationSettings(**{**base, **kw})


@pytest.fixture(scope="module")
def sd1(tiny_checkpoints):
    return tiny_checkpoints["sd1"]


@pytest.fixture(scope="module")
def lora(sd1, tmp_path_factory):
    return write_lora(tmp_path_factory.mktemp("loras") / "mylora.safetensors", load_model(sd1), seed=1)


def test_weight_zero_is_base_and_weight_w_is_the_delta_merged_at_w(sd1, lora):
    builds = generate_module.pipeline_builds
    model = load_model(sd1)
    original = {k: v.clone() for k, v in model.unet.state_dict().items()}
    generator = Generator(model)
    base = pixels(generator(request())[0])
    at_zero = pixels(generator(request(loras=[LoraRef(lora, 0.0)]))[0])
    at_w = pixels(generator(request(loras=[LoraRef(lora, 0.7)]))[0])
    at_half_w = pixels(generator(request(loras=[LoraRef(lora, 0.35)]))[0])
    base_again = pixels(generator(request())[0])
    assert generate_module.pipeline_builds == builds + 1  # one pipeline for every request
    assert np.array_equal(at_zero, base)
    assert np.array_equal(base_again, base)  # unmerging restored the base weights exactly
    generator.close()
    assert all(torch.equal(v, original[k]) for k, v in model.unet.state_dict().items())

    by_hand = load_model(sd1)
    merge_by_hand(by_hand, load_file(lora), 0.7)
    reference = pixels(Generator(by_hand)(request())[0])
    assert np.abs(reference - at_w).max() <= 1  # float rounding of the merge order only
    assert np.abs(base - at_w).max() > 10  # the LoRA does change the image...
    assert np.abs(at_half_w - at_w).max() > 5  # ...by an amount that depends on the weight


def test_separate_text_encoder_and_unet_strengths_are_the_parts_of_the_file(sd1, lora, tmp_path):
    tensors = load_file(lora)
    parts = {}
    for part, prefix in (("te", "lora_te_"), ("unet", "lora_unet_")):
        parts[part] = tmp_path / f"{part}-only.safetensors"
        save_file({k: v for k, v in tensors.items() if k.startswith(prefix)}, str(parts[part]))
    generator = Generator(load_model(sd1))

    def image(*loras):
        return pixels(generator(request(loras=list(loras)))[0])

    te_only, unet_only = image(LoraRef(parts["te"], 0.8)), image(LoraRef(parts["unet"], 0.8))
    assert np.array_equal(image(LoraRef(lora, 0.8, unet_weight=0.0)), te_only)
    assert np.array_equal(image(LoraRef(lora, 0.0, unet_weight=0.8)), unet_only)
    both = image(LoraRef(lora, 0.8, unet_weight=0.4))
    assert np.array_equal(both, image(LoraRef(parts["te"], 0.8), LoraRef(parts["unet"], 0.4)))
    base = image()
    assert min(np.abs(te_only - base).max(), np.abs(unet_only - base).max(), np.abs(both - te_only).max()) > 5
    # the same from A1111's tag, which the PNG keeps
    tagged = settings_for_prompt(PromptSpec("a photo of a cat <lora:mylora:0.8:0>"), request(), lora.parent)
    result = generator(tagged)[0]
    assert np.array_equal(pixels(result), te_only)
    assert result.parameters.prompt == "a photo of a cat <lora:mylora:0.8:0>"


@pytest.mark.parametrize("sampler", ["Euler a", "DPM++ SDE Karras"])
def test_batch_image_n_is_the_single_image_of_seed_plus_n(sd1, sampler):
    generator = Generator(load_model(sd1))
    batch = generator(request(sampler=sampler, steps=2, batch=2, seed=100))
    assert [img.seed for img in batch] == [100, 101]
    for img in batch:
        single = generator(request(sampler=sampler, steps=2, seed=img.seed))[0]
        # same noise; batched matmuls may round differently in the last bit
        assert np.abs(pixels(single) - pixels(img)).max() <= 1
    assert np.abs(pixels(batch[0]) - pixels(batch[1])).max() > 20


def test_parameters_describe_the_image(sd1, lora):
    generator = Generator(load_model(sd1))
    image = generator(request(loras=[LoraRef(lora, 0.5, "OUTALL")], clip_skip=2))[0]
    p = image.parameters
    assert p.prompt == "a photo of a cat <lora:mylora:0.5:lbw=OUTALL>"
    assert (p.steps, p.sampler, p.cfg, p.seed, p.width, p.height, p.clip_skip) == (
        3,
        "Euler a",
        6.0,
        11,
        32,
        32,
        2,
    )
    assert p.lora_hashes == {"mylora": addnet_hash(lora)[:12]}
    assert p.model == sd1.stem and len(p.model_hash) == 10


def test_clip_skip_uses_an_earlier_layer(sd1):
    generator = Generator(load_model(sd1))
    one = pixels(generator(request(clip_skip=1))[0])
    two = pixels(generator(request(clip_skip=2))[0])
    assert not np.array_equal(one, two)
    with pytest.raises(GenerationError, match="more than the text encoder"):
        generator(request(clip_skip=3))  # the tiny text encoder has 2 layers


def test_bad_requests_fail_before_generating(sd1):
    generator = Generator(load_model(sd1))
    with pytest.raises(GenerationError, match="multiple of 8"):
        generator(request(width=60))
    with pytest.raises(Exception, match="Did you mean"):
        generator(request(sampler="Eular a"))


@pytest.mark.parametrize("family", ["sd2", "sdxl"])
def test_sd2_v_and_sdxl(tiny_checkpoints, family, tmp_path):
    model = load_model(tiny_checkpoints[family])
    generator = Generator(model)
    image = generator(request(steps=2, sampler="DPM++ 2M Karras", clip_skip=2, width=None, height=None))[0]
    assert image.image.size == (64, 64)  # the model's own resolution
    assert np.asarray(image.image).std() > 0
    # A1111 does not use clip skip for SDXL, so it is not written there
    assert image.parameters.clip_skip == (None if family == "sdxl" else 2)
    path = image.save(tmp_path / "x.png")
    assert read_parameters(path) == image.parameters


def test_cli_generate(sd1, lora, tmp_path, capsys):
    out = tmp_path / "out"
    args = [
        "generate",
        "--model",
        str(sd1),
        "--prompt",
        "a cat <lora:mylora:0.5>",
        "--lora-dir",
        str(lora.parent),
    ]
    args += [
        "--steps",
        "2",
        "--seed",
        "3",
        "--batch",
        "2",
        "--sampler",
        "euler_a",
        "--width",
        "32",
        "--height",
        "32",
    ]
    args += ["--out", str(out)]
    assert main(args) == 0
    assert sorted(p.name for p in out.iterdir()) == ["00000-3.png", "00001-4.png"]
    p = read_parameters(out / "00001-4.png")
    assert (p.prompt, p.seed, p.sampler, p.steps) == ("a cat <lora:mylora:0.5>", 4, "Euler a", 2)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a dog --d 8 --s 2 --w 48 --h 32 --ss ddim\n", encoding="utf-8")
    assert main(["generate", "--model", str(sd1), "--prompts", str(prompts), "--out", str(out)]) == 0
    p = read_parameters(out / "00002-8.png")
    assert (p.prompt, p.width, p.height, p.sampler) == ("a dog", 48, 32, "DDIM")
    assert str(out / "00002-8.png") in capsys.readouterr().out


def test_cli_errors(sd1, tmp_path, capsys):
    assert (
        main(
            [
                "generate",
                "--model",
                str(sd1),
                "--prompt",
                "x",
                "--sampler",
                "DPM++ 2S a",
                "--out",
                str(tmp_path),
            ]
        )
        == 2
    )
    assert "no diffusers equivalent" in capsys.readouterr().err
    missing = ["generate", "--model", str(sd1), "--prompt", "x <lora:nothere:1>", "--lora-dir", str(tmp_path)]
    assert main([*missing, "--out", str(tmp_path)]) == 2
    assert "nothere" in capsys.readouterr().err
