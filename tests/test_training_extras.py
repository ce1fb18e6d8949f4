"""Validation loss, the learning-rate finder, and the frozen-text-encoder caption cache."""

import json

import torch
from training_helpers import make_folder_dataset, write_config

from lorakit.cli.main import main
from lorakit.data.text_cache import TextOutputCache
from lorakit.training.config import load_config
from lorakit.training.loss import LossOptions
from lorakit.training.lr_find import divergence, find_lr
from lorakit.training.noise import NoiseOptions, training_scheduler
from lorakit.training.recipe import train
from lorakit.training.setup import build_data
from lorakit.training.step import (
    StepContext,
    TextOptions,
    ValidationOptions,
    conditioning,
    text_outputs,
    validation_loss,
)


def _config(tmp_path, checkpoint, extra=""):
    train_dir = make_folder_dataset(tmp_path, images=4, repeats=1)
    return write_config(
        tmp_path / "c.toml",
        checkpoint,
        f'train_data_dir = "{train_dir.as_posix()}"\ncaption_extension = ".txt"\nresolution = "64"\n'
        f'network_dim = 4\nlearning_rate = 1e-3\nseed = 5\noutput_dir = "{(tmp_path / "o").as_posix()}"\n'
        'log_with = "none"\n' + extra,
    )


def test_validation_loss_per_epoch_is_recorded_and_deterministic(tiny_checkpoints, tmp_path):
    config = load_config(
        _config(tmp_path, tiny_checkpoints["sd1"], "max_train_epochs = 2\nvalidation_split = 0.5\n")
    )
    result = train(config, quiet=True)
    assert result.steps == 4  # 2 of the 4 images train, 2 are held out
    epochs = json.loads(result.record.read_text())["epochs"]
    assert [e["epoch"] for e in epochs] == [1, 2]
    assert all(isinstance(e["validation_loss"], float) for e in epochs)
    # measured again with the final weights, the last epoch's figure comes back exactly
    _, validation = build_data(config, result.model, 5, print)
    assert validation.num_train_images == 2
    result.network.eval()
    from lorakit.training.setup import Runtime

    ctx = StepContext(
        result.model,
        training_scheduler(result.model),
        NoiseOptions(),
        LossOptions(),
        TextOptions.from_config(config),
        torch.Generator().manual_seed(0),
        train_text=False,
    )
    again = validation_loss(ctx, validation, ValidationOptions.from_config(config), 5, Runtime("no"))
    assert again == epochs[-1]["validation_loss"]


def test_lr_find_suggests_the_settled_step_size(tiny_checkpoints, tmp_path, capsys):
    config = load_config(_config(tmp_path, tiny_checkpoints["sd1"], "save_state = true\nresume = 'auto'\n"))
    result = find_lr(config, steps=8)
    assert len(result.dlr) == 8 and result.dlr[-1] > result.dlr[0] >= 1e-6  # d starts at 1e-6 and grows
    tail = sorted(result.dlr[-2:])
    assert result.settled == (tail[0] + tail[1]) / 2
    assert abs(result.lion - result.settled / 3) < 1e-12
    assert result.diverged is None and len(result.losses) == 8
    assert result.plot == tmp_path / "o" / "lora-lr-find.png" and result.plot.read_bytes()[:4] == b"\x89PNG"
    err = capsys.readouterr().err
    assert "lr-find: 100%" in err and "saved" not in err  # its own progress bar, no "saved ..." lines
    # as its help says: the plot is the only file written (no run.json, config copy, loss plot, state)
    assert sorted(p.name for p in (tmp_path / "o").rglob("*")) == ["lora-lr-find.png"]
    assert main(["lr-find", str(tmp_path / "c.toml"), "--steps", "4", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "AdamW / AdamW8bit: unet_lr = " in out and "save_every_n_epochs" not in out
    assert sorted(p.name for p in (tmp_path / "o").rglob("*")) == ["lora-lr-find.png"]


def test_a_diverging_lr_find_says_so_instead_of_suggesting(tiny_checkpoints, tmp_path, capsys):
    _config(tmp_path, tiny_checkpoints["sd1"])
    # d0 = 1: D-Adaptation starts at a step size a million times its usual start; the loss explodes
    argv = ["lr-find", str(tmp_path / "c.toml"), "--steps", "16", "--optimizer_args", "d0=1", "--quiet"]
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert "DAdaptation diverged: the loss became NaN or infinite at step" in out
    assert "no learning rate is suggested" in out and "Suggested settings" not in out
    assert (tmp_path / "o" / "lora-lr-find.png").exists()


def test_divergence_compares_the_last_quarter_with_the_first():
    # the run: the quickstart's tiny model, 40 steps, DAdaptation (loss 0.05 -> ~1.0)
    seen = [0.0474, 0.0604, 0.0156, 0.0742, 0.0843, 0.1179, 0.0627, 0.0846, 0.0632, 0.0539]
    seen += [0.0898, 0.0317, 0.0628, 0.0514, 0.0672, 0.0586, 0.0933, 0.1027, 0.0557, 0.0478]
    seen += [0.0658, 0.1056, 0.2564, 0.2126, 0.8430, 1.1502, 1.7839, 1.5577, 1.1606, 1.3924]
    seen += [1.1925, 0.5538, 1.1592, 1.5091, 1.3335, 0.9452, 1.2432, 0.7929, 1.1201, 1.0890]
    first, last = sorted(seen[:10]), sorted(seen[-10:])
    start, end = (first[4] + first[5]) / 2, (last[4] + last[5]) / 2  # medians of 10
    assert divergence(seen) == (
        f"the loss rose from {start:.4f} (median of the first 10 steps) to {end:.4f} (median of the last 10)"
    )
    assert divergence(seen[:20]) is None  # noisy, but not rising: a learning run
    assert divergence(seen[-12:]) is None  # too few steps to judge
    assert divergence([0.1, float("nan")]) == "the loss became nan at step 2"


def test_caption_cache_gives_the_sameconditioning(tiny_checkpoints):
    from lorakit.models.load import load_model

    model = load_model(tiny_checkpoints["sdxl"])
    text = TextOptions.from_config(load_config(None))
    cache = TextOutputCache(text_outputs(model, text), "memory")
    captions = ["a cat", "a dog", "a cat"]
    direct = conditioning(model, captions, text, train_text=False)
    cached = conditioning(model, captions, text, train_text=False, cache=cache)
    again = conditioning(model, captions, text, train_text=False, cache=cache)
    assert torch.allclose(direct[0], cached[0], atol=1e-6) and torch.allclose(direct[1], cached[1], atol=1e-6)
    assert torch.equal(cached[0], again[0]) and cache.hits >= 3 and len(cache.items) == 2


def test_previews_every_epoch_with_parameters_and_no_effect_on_training(
    tiny_checkpoints, tmp_path, monkeypatch
):
    import numpy as np
    from PIL import Image

    from lorakit.evaluation.pngmeta import parse_parameters
    from lorakit.training import previews as previews_module

    prompts = tmp_path / "prompts.txt"
    prompts.write_text(
        "# a comment line\nsks, magenta circle --n blurry --s 3 --l 5 --d 7\na red square --s 3\n"
    )
    base = "max_train_epochs = 2\n"
    plain = train(load_config(_config(tmp_path / "a", tiny_checkpoints["sd1"], base)), quiet=True)
    strips = []
    real_strip = previews_module.draw_strip

    def draw_strip(images, labels, caption=""):
        strips.append((labels, caption))
        return real_strip(images, labels, caption)

    monkeypatch.setattr(previews_module, "draw_strip", draw_strip)
    extra = (
        base + f'sample_prompts = "{prompts.as_posix()}"\nsample_every_n_epochs = 1\nsample_at_first = true\n'
    )
    result = train(load_config(_config(tmp_path / "b", tiny_checkpoints["sd1"], extra)), quiet=True)
    names = sorted(p.name for p in result.samples)
    assert names == sorted(f"lora_e{e:06d}_{i}.png" for e in range(3) for i in ("00", "01", "strip"))
    params = parse_parameters(
        Image.open(tmp_path / "b" / "o" / "sample" / "lora_e000001_00.png").text["parameters"]
    )
    assert (params.prompt, params.negative_prompt, params.steps, params.cfg, params.seed) == (
        "sks, magenta circle",
        "blurry",
        3,
        5.0,
        7,
    )
    assert params.sampler == "DDIM"  # sd-scripts' default preview sampler
    # each strip says what it is: the run and the epoch on top, each picture under its prompt
    assert [caption for _, caption in strips] == [
        "lora: before training (the base model alone)",
        "lora: after epoch 1 (step 4)",
        "lora: after epoch 2 (step 8)",
    ]
    assert all(labels == ["sks, magenta circle", "a red square"] for labels, _ in strips)
    strip = np.asarray(Image.open(tmp_path / "b" / "o" / "sample" / "lora_e000001_strip.png").convert("RGB"))
    first = Image.open(tmp_path / "b" / "o" / "sample" / "lora_e000001_00.png").convert("RGB")
    enlarged = np.asarray(first.resize((128, 128), Image.Resampling.NEAREST))  # 64 px drawn 2x
    top = strip.shape[0] - 128
    assert top > 0 and np.array_equal(strip[top:, :128], enlarged)
    assert (strip[:top].min(-1) < 128).sum() > 50  # the caption and labels are written above
    # previews keep their own random state: the trained weights equal a run without previews
    a, b = plain.network.state_dict(), result.network.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_black_and_uniform_previews_are_recognised():
    import numpy as np

    from lorakit.evaluation.generate import blank_picture as preview_problem

    assert preview_problem(np.zeros((8, 8, 3), np.uint8)) == "black"
    assert preview_problem(np.full((8, 8, 3), 128, np.uint8)) == "uniform"
    rng = np.random.default_rng(0)
    assert preview_problem(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)) is None


def test_the_loss_plot_names_the_run_and_marks_each_epoch():
    from lorakit.training.watch import loss_figure

    losses = [(step, 1.0 / step) for step in range(1, 13)]
    epochs = [
        {"epoch": 1, "step": 4},
        {"epoch": 2, "step": 8, "validation_loss": 0.2},
        {"epoch": 3, "step": 12},
    ]
    fig = loss_figure(losses, epochs, "ohwx-magenta")
    ax = fig.axes[0]
    assert ax.get_title() == "ohwx-magenta: loss per step"
    marks = sorted(line.get_xdata()[0] for line in ax.get_lines() if line.get_linestyle() == ":")
    assert marks == [4, 8, 12]
    assert [t.get_text() for t in ax.texts] == ["epoch 1", "epoch 2", "epoch 3"]
    assert "end of each epoch" in ax.get_xlabel()
