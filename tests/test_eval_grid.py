"""X/Y/Z grids: epochs x weights on the tiny model, labels, cell images and their parameters,
one pipeline and one model load for the whole grid, and the best-epoch view of a training run."""

import json
import logging

import numpy as np
import pytest
from eval_helpers import write_lora
from PIL import Image

from lorakit.cli.main import main
from lorakit.evaluation import generate as generate_module
from lorakit.evaluation.drawing import MIN_CELL, draw_grid, enlargement
from lorakit.evaluation.fonts import font_path, label_font
from lorakit.evaluation.generate import GenerationSettings, Generator
from lorakit.evaluation.grid import GridError, check_axes, parse_axis, run_grid
from lorakit.evaluation.pngmeta import addnet_hash, read_parameters
from lorakit.evaluation.prompts import LoraRef
from lorakit.models.load import load_model

CELL = 32


@pytest.fixture(scope="module")
def run_dir(tiny_checkpoints, tmp_path_factory):
    """A training output folder as sd-scripts names the saves: two epochs and the final file."""
    folder = tmp_path_factory.mktemp("run")
    model = load_model(tiny_checkpoints["sd1"])
    for seed, name in enumerate(["mylora-000002", "mylora", "mylora-000001"]):
        write_lora(folder / f"{name}.safetensors", model, seed=seed)
    return folder


def ink(image: Image.Image, box) -> int:
    """Dark pixels in a box: drawn text."""
    return int((np.asarray(image.crop(box).convert("L")) < 128).sum())


def test_epoch_by_weight_grid(tiny_checkpoints, run_dir, tmp_path):
    builds = generate_module.pipeline_builds
    generator = Generator(load_model(tiny_checkpoints["sd1"]))
    drawn = []
    real_call = Generator.__call__
    generator.__class__ = type(
        "Counting", (Generator,), {"__call__": lambda g, s: drawn.append(s) or real_call(g, s)}
    )
    x = parse_axis("weight=0, 0.5, 1, 1.5")
    y = parse_axis("lora=*.safetensors", run_dir)
    base = GenerationSettings(prompt="a cat", sampler="Euler", steps=2, seed=-1, width=CELL, height=CELL)
    result = run_grid(generator, base, x, y, out=tmp_path / "grid")
    assert generate_module.pipeline_builds == builds + 1
    assert len(drawn) == 3 * 3 + 1  # weight 0 is the base model: drawn once, not once per epoch

    # epochs in order, the final save (no number) last
    assert y.labels == ["mylora-000001", "mylora-000002", "mylora"]
    assert x.labels == ["0", "0.5", "1", "1.5"]

    grid = Image.open(tmp_path / "grid" / "grid.png")
    left, top = result.layout.cells[(0, 0, 0)]
    assert left > 0 and top > 0  # room for the row and column labels
    side = result.layout.cell_size[0]
    assert result.layout.cell_size == (4 * CELL, 4 * CELL)  # 32-pixel cells are drawn 4x larger
    assert grid.size == (left + 4 * side, top + 3 * side)
    assert len(result.cells) == 12
    seeds = set()
    for cell in result.cells:
        cx, cy = result.layout.cells[(0, cell.y, cell.x)]
        assert (cx, cy) == (left + cell.x * side, top + cell.y * side)
        own = Image.open(cell.file).convert("RGB")
        assert own.size == (CELL, CELL)  # the cell files keep the generated size
        drawn = np.asarray(grid.crop((cx, cy, cx + side, cy + side)).convert("RGB"))
        assert np.array_equal(drawn[::4, ::4], np.asarray(own))
        p = read_parameters(cell.file)
        lora = y.values[cell.y]
        weight = x.values[cell.x]
        assert p.prompt == f"a cat <lora:{lora.stem}:{weight:g}>"
        assert p.lora_hashes == {lora.stem: addnet_hash(lora)[:12]}
        assert (p.steps, p.sampler, p.width, p.height) == (2, "Euler", CELL, CELL)
        seeds.add(p.seed)
    assert len(seeds) == 1  # one seed for the whole grid

    # weight 0 of every epoch is the base image; other weights differ by epoch
    pixels = {(c.x, c.y): np.asarray(c.image.image).astype(int) for c in result.cells}
    assert all(np.array_equal(pixels[(0, j)], pixels[(0, 0)]) for j in range(3))
    assert not np.array_equal(pixels[(2, 0)], pixels[(2, 1)])

    for box in result.layout.column_label_boxes.values():
        assert ink(grid, box) > 0
    # the prompt is written across the top, above the column labels
    caption = result.layout.caption_box
    assert caption is not None and ink(grid, caption) > 0
    assert caption[3] <= min(box[1] for box in result.layout.column_label_boxes.values())
    cells = [[[c.image.image for c in result.cells[:4]]]]
    with_caption, layout = draw_grid(cells, x.labels, ["e1"], caption="prompt: a cat")
    plain, _ = draw_grid(cells, x.labels, ["e1"])
    assert with_caption.size[1] - plain.size[1] == layout.caption_box[3] > 0
    for box in result.layout.row_label_boxes.values():
        assert ink(grid, box) > 0
    summary = json.loads((tmp_path / "grid" / "grid.json").read_text(encoding="utf-8"))
    assert summary["axes"]["x"] == {"kind": "weight", "labels": x.labels}
    assert len(summary["cells"]) == 12
    assert read_parameters(tmp_path / "grid" / "grid.png").seed in seeds


def test_z_axis_prompt_search_replace_and_sampler(tiny_checkpoints, tmp_path):
    generator = Generator(load_model(tiny_checkpoints["sd1"]))
    x = parse_axis("prompt=cat, 猫, dog")
    z = parse_axis('sampler="Euler a", ddim')
    base = GenerationSettings(
        prompt="a cat", negative_prompt="no cat", steps=2, seed=4, width=CELL, height=CELL
    )
    result = run_grid(generator, base, x=x, z=z)
    width, height = result.image.size
    (l0, t0), (l1, _) = result.layout.cells[(0, 0, 0)], result.layout.cells[(1, 0, 0)]
    side = result.layout.cell_size[0]
    assert l1 - l0 >= 3 * side  # the second sampler's grid stands to the right of the first
    assert width >= l1 + 3 * side and height == t0 + side
    prompts = {(c.z, c.x): c.image.parameters for c in result.cells}
    assert prompts[(0, 1)].prompt == "a 猫" and prompts[(0, 1)].negative_prompt == "no 猫"
    assert prompts[(1, 2)].sampler == "DDIM" and prompts[(0, 2)].sampler == "Euler a"
    assert prompts[(1, 2)].prompt == "a dog"


def test_axis_values():
    assert parse_axis("weight=0-1 [5]").values == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert parse_axis("cfg=3-6 (+1.5)").values == [3.0, 4.5, 6.0]
    assert parse_axis("steps=10-12, 20").values == [10, 11, 12, 20]
    assert parse_axis("strength=-0.5, 1").kind == "weight"
    assert parse_axis('blocks=OUTALL, "1,0,0,0,0,0,0,0,1,1,1,1,1,1,1,1,1"').values[1].count(",") == 16
    assert parse_axis("sampler=euler_a, k_dpmpp_2m_ka").labels == ["Euler a", "DPM++ 2M Karras"]
    with pytest.raises(GridError, match="kinds: lora, weight"):
        parse_axis("weight 0,1")
    with pytest.raises(GridError, match="unknown"):
        parse_axis("colour=red")
    with pytest.raises(GridError, match="not a number"):
        parse_axis("cfg=high")
    with pytest.raises(GridError, match="matches no LoRA"):
        parse_axis("lora=/nonexistent/*.safetensors")


def test_axis_combinations_are_checked(run_dir):
    lora = LoraRef(run_dir / "mylora.safetensors")
    base = GenerationSettings(prompt="a cat")
    with pytest.raises(GridError, match="exactly one --lora"):
        check_axes(base, [parse_axis("weight=0,1"), None, None])
    check_axes(GenerationSettings(prompt="a cat", loras=[lora]), [parse_axis("weight=0,1"), None, None])
    with pytest.raises(GridError, match="does not contain it"):
        check_axes(base, [parse_axis("prompt=dog,cat"), None, None])
    with pytest.raises(GridError, match="twice"):
        check_axes(base, [parse_axis("cfg=1,2"), parse_axis("cfg=3"), None])


def test_labels_draw_cjk_glyphs():
    """The label font has real Chinese/Japanese/Korean glyphs, not the missing-glyph box."""
    assert font_path() is not None
    font = label_font(24)
    missing = bytes(font.getmask("\U0010fffd"))
    for text in ("猫", "ねこ", "고양이", "A"):
        assert bytes(font.getmask(text)) != missing, text


def test_missing_cjk_font_falls_back_with_a_warning(monkeypatch, caplog, tmp_path):
    from lorakit.evaluation import fonts

    monkeypatch.setattr(fonts, "_packaged_font", lambda: None)
    monkeypatch.setattr(fonts, "SYSTEM_FONTS", (str(tmp_path / "none.ttf"),))
    monkeypatch.delenv(fonts.FONT_ENV, raising=False)
    fonts.font_path.cache_clear()
    fonts.label_font.cache_clear()
    try:
        with caplog.at_level(logging.WARNING):
            font = fonts.label_font(16)
        assert "No font with Chinese" in caplog.text
        image, _ = draw_grid([[[Image.new("RGB", (CELL, CELL))]]], ["猫 0.5"], ["epoch 1"], font_size=12)
        assert image.size[0] > CELL and font is not None
    finally:
        fonts.font_path.cache_clear()
        fonts.label_font.cache_clear()


def test_grid_run_picks_epochs_prints_losses_and_loads_once(
    tiny_checkpoints, run_dir, tmp_path, monkeypatch, capsys
):
    from lorakit.evaluation import generate

    record = {
        "output_name": "mylora",
        "base_model": str(tiny_checkpoints["sd1"]),
        "sample_prompts": ["a cat, masterpiece --d 5 --s 2 --w 32 --h 32 --l 5 --ss euler"],
        "epochs": [
            {"epoch": 1, "file": "mylora-000001.safetensors", "validation_loss": 0.2012},
            {"epoch": 2, "file": "mylora-000002.safetensors", "validation_loss": 0.1503},
            {"epoch": 3, "file": "mylora.safetensors", "validation_loss": 0.1781},
        ],
    }
    run = tmp_path / "run"
    run.mkdir()
    for f in run_dir.iterdir():
        (run / f.name).write_bytes(f.read_bytes())
    (run / "run.json").write_text(json.dumps(record), encoding="utf-8")

    loads = []
    real_load = generate.load_model
    monkeypatch.setattr(generate, "load_model", lambda *a, **k: loads.append(a) or real_load(*a, **k))
    builds = generate.pipeline_builds
    assert main(["grid", "--run", str(run), "--x", "weight=0.5,1"]) == 0
    assert len(loads) == 1 and generate.pipeline_builds == builds + 1

    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if "mylora" in line]
    assert [line.split()[0] for line in lines] == ["1", "2", "3"]
    assert lines[1].endswith("<- lowest") and "0.15030" in lines[1]
    assert not lines[0].endswith("lowest") and not lines[2].endswith("lowest")

    summary = json.loads((run / "grid" / "grid.json").read_text(encoding="utf-8"))
    assert summary["axes"]["y"]["labels"] == ["epoch 1", "epoch 2", "epoch 3"]
    assert summary["axes"]["x"]["labels"] == ["0.5", "1"]
    first = read_parameters(run / "grid" / summary["cells"][0]["file"])
    assert (first.seed, first.steps, first.cfg, first.sampler) == (5, 2, 5.0, "Euler")
    assert first.prompt == "a cat, masterpiece <lora:mylora-000001:0.5>"
    grid = Image.open(run / "grid" / "grid.png")
    assert grid.size[1] > 3 * CELL and grid.size[0] > 2 * CELL


def test_grid_run_makes_one_grid_per_prompt_with_weights_from_0(tiny_checkpoints, run_dir, tmp_path, capsys):
    """The same grids as the quickstart's: per sample prompt, epochs x weights 0 / 0.5 / 1, each
    grid captioned with its prompt."""
    run = tmp_path / "run"
    run.mkdir()
    for f in run_dir.iterdir():
        (run / f.name).write_bytes(f.read_bytes())
    prompts = ["a cat --d 5 --s 2 --w 32 --h 32", "a dog --d 6 --s 2 --w 32 --h 32"]
    record = {
        "base_model": str(tiny_checkpoints["sd1"]),
        "sample_prompts": prompts,
        "sample_sampler": "euler",
    }
    record["epochs"] = [
        {"epoch": 1, "file": "mylora-000001.safetensors"},
        {"epoch": 2, "file": "mylora.safetensors"},
    ]
    (run / "run.json").write_text(json.dumps(record), encoding="utf-8")
    assert main(["grid", "--run", str(run)]) == 0
    out = capsys.readouterr().out
    for i, prompt in enumerate(["a cat", "a dog"], 1):
        folder = run / "grid" / f"prompt-{i:02d}"
        assert f"{folder / 'grid.png'}  (" in out
        summary = json.loads((folder / "grid.json").read_text(encoding="utf-8"))
        assert summary["axes"]["x"]["labels"] == ["0", "0.5", "1"]
        assert summary["axes"]["y"]["labels"] == ["epoch 1", "epoch 2"]
        assert (
            read_parameters(folder / summary["cells"][0]["file"]).prompt == f"{prompt} <lora:mylora-000001:0>"
        )


def test_grid_run_errors(tmp_path, capsys):
    assert main(["grid", "--run", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "run.json").write_text(json.dumps({"epochs": [{"file": "gone.safetensors"}]}))
    assert main(["grid", "--run", str(tmp_path), "--model", "x"]) == 2
    assert "gone.safetensors" in capsys.readouterr().err


def test_sdxl_block_weight_axis(tiny_checkpoints, tmp_path):
    """A LoRA made by lorakit's own network code for SDXL, varied by A1111 block-weight vectors:
    all blocks at 0 gives the base image, all at 1 the full LoRA, BASE only changes the text side."""
    import torch

    from lorakit.networks import create_network

    model = load_model(tiny_checkpoints["sdxl"])
    network = create_network(model, network_dim=4, network_alpha=4)
    with torch.no_grad():
        for p in network.parameters():
            p.normal_(0, 0.3, generator=torch.Generator().manual_seed(p.numel()))
    lora = network.save(tmp_path / "xl.safetensors")
    del network

    generator = Generator(model)
    zeros, ones, base_only = "0,0,0,0,0,0,0,0,0,0,0,0", "1,1,1,1,1,1,1,1,1,1,1,1", "1,0,0,0,0,0,0,0,0,0,0,0"
    x = parse_axis(f'blocks="{zeros}","{ones}","{base_only}"')
    settings = GenerationSettings(prompt="a cat", sampler="Euler", steps=2, seed=3, width=CELL, height=CELL)
    result = run_grid(generator, GenerationSettings(**{**settings.__dict__, "loras": [LoraRef(lora)]}), x)
    no_lora = np.asarray(generator(settings)[0].image).astype(int)
    cells = [np.asarray(c.image.image).astype(int) for c in sorted(result.cells, key=lambda c: c.x)]
    assert np.array_equal(cells[0], no_lora)
    assert np.abs(cells[1] - no_lora).max() > 10
    assert not np.array_equal(cells[2], no_lora) and not np.array_equal(cells[2], cells[1])
    assert result.cells[0].image.parameters.prompt == f"a cat <lora:xl:1:lbw={zeros}>"


def test_small_pictures_are_enlarged_by_a_whole_factor():
    assert MIN_CELL == 128
    assert enlargement(32, 32) == 4  # 128 / 32
    assert enlargement(48, 100) == 3  # 48 -> 144, the first whole factor reaching 128
    assert enlargement(200, 128) == 1 and enlargement(512, 768) == 1
