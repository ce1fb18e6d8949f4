"""The honest test that training learns: the embedded tiny model draws what it is asked, and a
LoRA trained by the quickstart on 10 magenta pictures makes magenta with its trigger word, and
only then. Each check counts pictures the concept score reads as magenta.

Thresholds (issue 7): the base model's colour (and shape) right for >= 80% of 16 seeds of every
pair it knows; with the trigger and the LoRA at 1.0 >= 90% of 32 seeds magenta; at weight 0,
and for prompts without the trigger, <= 10%.
"""

import json

import numpy as np
import pytest
import torch

from lorakit.models.load import load_model
from lorakit.quickstart import demo, shapes
from lorakit.quickstart.run import (
    ALGORITHMS,
    concept_check,
    quickstart_config,
    run_quickstart,
    tiny_model_path,
)
from lorakit.quickstart.sample import generate
from lorakit.quickstart.score import read_image
from lorakit.training.config import load_config
from lorakit.training.recipe import train

SEEDS = 32


@pytest.fixture(scope="module")
def base():
    return load_model(tiny_model_path(), dtype=torch.float32)


def test_the_tiny_model_is_a_small_single_file_checkpoint(base):
    path = tiny_model_path()
    assert path.stat().st_size <= 25 * 1024 * 1024
    assert base.family.name == "sd1" and base.resolution == shapes.SIZE and base.prediction_type == "epsilon"
    assert base.vae.config.scaling_factor == pytest.approx(0.18215)


def test_the_sampler_draws_each_picture_from_its_own_prompt_and_seed(base):
    prompts = ["a red circle on a white background", "a blue square on a black background"]
    pair = generate(base, prompts, [3, 4], steps=4)
    alone = generate(base, prompts[1:], [4], steps=4)
    difference = np.abs(np.asarray(pair[1], dtype=int) - np.asarray(alone[0], dtype=int))
    assert difference.max() <= 2  # the same picture, whatever else is in the batch
    assert not np.array_equal(np.asarray(pair[0]), np.asarray(pair[1]))
    unguided = generate(base, prompts[:1], [3], steps=4, cfg=1.0)  # no guidance: no empty prompt
    assert unguided[0].size == (shapes.SIZE, shapes.SIZE)


def test_the_base_model_draws_every_colour_and_shape_it_knows(base):
    backgrounds = list(shapes.BACKGROUNDS)
    pairs = [(shape, colour) for shape in shapes.SHAPES for colour in shapes.COLOURS]
    prompts = [
        f"a {colour} {shape} on a {backgrounds[s % 3]} background"
        for shape, colour in pairs
        for s in range(16)
    ]
    seeds = [s for _ in pairs for s in range(16)]
    readings = [read_image(im) for im in generate(base, prompts, seeds)]
    failures = {}
    for i, (shape, colour) in enumerate(pairs):
        rows = readings[16 * i : 16 * (i + 1)]
        right = sum(r.colour == colour and r.shape == shape for r in rows) / 16
        if right < 0.8:
            failures[f"{colour} {shape}"] = right
    assert not failures, f"pairs drawn right in less than 80% of 16 seeds: {failures}"
    assert not any(r.colour == "magenta" for r in readings), "the base model must never draw magenta"


def assert_learned(rates: dict[str, float]) -> None:
    assert rates["trigger, LoRA 1.0"] >= 0.9, rates
    assert rates["trigger, LoRA 0"] <= 0.1, rates
    assert rates["no trigger, LoRA 1.0"] <= 0.1, rates


def test_quickstart_teaches_a_lora_the_new_colour_and_writes_what_it_promises(tmp_path, capsys):
    result = run_quickstart(tmp_path / "qs", quiet=True, concept_seeds=SEEDS)
    assert_learned(result.concept)
    out = tmp_path / "qs" / "output"
    epochs = sorted(p.name for p in out.glob("ohwx-magenta-0*.safetensors"))
    assert epochs == [f"ohwx-magenta-{e:06d}.safetensors" for e in (1, 2, 3)]
    assert result.lora == out / "ohwx-magenta.safetensors" and result.lora.exists()
    for png in [*result.grids, result.loss_plot, *result.previews]:
        assert png.read_bytes()[:4] == b"\x89PNG", png
    # previews before training (the base model alone), then after each epoch
    assert [p.name for p in result.previews] == [f"ohwx-magenta_e{e:06d}_strip.png" for e in range(5)]
    # one grid per sample prompt, as 'lorakit grid --run' makes them
    prompts = len(demo.SAMPLE_PROMPTS.strip().splitlines()) - 2  # two comment lines
    assert result.grids == [out / "grid" / f"prompt-{i:02d}" / "grid.png" for i in range(1, prompts + 1)]
    grid = json.loads((out / "grid" / "prompt-01" / "grid.json").read_text())
    assert grid["axes"]["x"]["labels"] == ["0", "0.5", "1"] and len(grid["axes"]["y"]["labels"]) == 4
    record = json.loads(result.record.read_text())
    assert record["status"] == "finished" and len(record["epochs"]) == 4
    assert record["dataset"]["captions"] == {"file": 2 * demo.IMAGES}
    # the controls show what they name before training and after it: the LoRA left them alone
    assert result.controls == [(demo.control_prompt(c, s, b), c, c) for c, s, b, _ in demo.CONTROLS]
    printed = capsys.readouterr().out
    for name in (
        "grid/prompt-NN/grid.png",
        "ohwx-magenta-loss.png",
        "run.json",
        "lorakit-quickstart.toml",
        "sample/",
    ):
        assert name in printed
    assert "'red circle, gray background': red before training, red after epoch 4 (unchanged)" in printed


@pytest.mark.parametrize("algorithm", [a for a in ALGORITHMS if a != "lora"])
def test_every_network_kind_learns_the_concept_only_when_asked(base, tmp_path, algorithm):
    config = load_config(quickstart_config(tmp_path, algorithm, save_every_n_epochs=0))
    result = train(config, quiet=True)
    assert_learned(concept_check(base, result.final_file, SEEDS))
