"""The quickstart's files: synthetic pictures, the demo dataset, the config template and the
prompt file reader. No model is needed here."""

import hashlib
import random

import pytest
from PIL import Image

from lorakit.data import load_config as load_dataset_config
from lorakit.data.check import check_dataset
from lorakit.quickstart import demo, shapes
from lorakit.quickstart.run import (
    ALGORITHMS,
    QuickstartError,
    fill_template,
    quickstart_config,
    template_text,
)
from lorakit.quickstart.score import read_image
from lorakit.training.config import load_config


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_pictures_are_a_pure_function_of_the_seed():
    a, b = shapes.draw(shapes.picture(123)), shapes.draw(shapes.picture(123))
    assert a.tobytes() == b.tobytes() and a.size == (shapes.SIZE, shapes.SIZE)
    assert shapes.draw(shapes.picture(124)).tobytes() != a.tobytes()


def test_the_pretraining_set_never_shows_the_held_out_colour():
    seen = {shapes.training_pair(i)[2].colour for i in range(3000)}
    assert seen == set(shapes.COLOURS) and shapes.HELD_OUT_COLOUR not in seen
    captions = [shapes.training_pair(i)[1] for i in range(3000)]
    assert not any(shapes.HELD_OUT_COLOUR in c or demo.TRIGGER in c for c in captions)


def test_captions_name_the_picture_in_both_styles():
    p = shapes.picture(7, shape="square", colour="green", background="gray")
    texts = {shapes.caption(p, random.Random(i)) for i in range(200)}
    assert "a green square on a gray background" in texts and "green square, gray background" in texts
    assert all("square" in t for t in texts)
    assert all("green" in t or "green" not in t and t.count(" ") <= 5 for t in texts)


def test_demo_dataset_is_deterministic_and_in_kohya_layout(tmp_path):
    first = demo.write_demo(tmp_path / "a")
    second = demo.write_demo(tmp_path / "b")
    assert [digest(p) for p in first.images] == [digest(p) for p in second.images]
    folder = first.train_dir / demo.FOLDER
    assert folder.name == "10_ohwx shape" and len(first.images) == demo.IMAGES
    captions = [p.with_suffix(".txt").read_text().strip() for p in first.images]
    assert all(c.startswith(demo.TRIGGER + ", ") for c in captions)
    assert {c.split(", ")[1] for c in captions} == set(shapes.SHAPES)
    assert all(read_image(Image.open(p)).colour == "magenta" for p in first.images)
    reg = sorted((first.reg_dir / demo.REG_FOLDER).glob("*.png"))
    assert len(reg) == 10 and {read_image(Image.open(p)).colour for p in reg} == set(shapes.COLOURS)
    assert not any(demo.TRIGGER in p.with_suffix(".txt").read_text() for p in reg)
    folders = check_dataset(
        first.train_dir,
        reg_data_dir=first.reg_dir,
        options={"resolution": 32, "bucket_reso_steps": 32, "caption_extension": ".txt"},
    )
    assert not folders.problems.errors and folders.train_images == 10 and folders.reg_images == 10
    # dataset.toml lists the same folders, and drops the captions of the reg pictures only
    plan = check_dataset(first.config, options={"resolution": 32, "bucket_reso_steps": 32})
    assert not plan.problems.errors and (plan.train_images, plan.reg_images) == (10, 10)
    subsets = load_dataset_config(first.config).datasets[0].subsets
    assert [(s.is_reg, s.num_repeats, s.caption_dropout_rate) for s in subsets] == [
        (False, 10, 0.0),
        (True, 1, demo.REG_CAPTION_DROPOUT),
    ]


def test_fill_template_keeps_comments_and_adds_unknown_keys():
    text = 'a = "x"  # the a\nb = 3\n# c = 1\n'
    filled = fill_template(text, {"a": "C:/y z", "b": 4.5, "network_args": ["algo=loha", "conv_dim=4"]})
    assert 'a = "C:/y z"  # the a' in filled and "b = 4.5" in filled and "# c = 1" in filled
    assert filled.rstrip().endswith('network_args = ["algo=loha", "conv_dim=4"]')


def test_the_shipped_template_is_a_valid_training_config(tmp_path):
    path = tmp_path / "example.toml"
    path.write_text(template_text())
    config = load_config(path)
    assert config.network_module == "networks.lora" and config.save_every_n_epochs == 1
    assert config.sample_prompts and config.cache_latents
    assert config.sample_every_n_epochs == 1 and config.sample_at_first
    # what a copy for one's own pictures needs: the captions' extension, a state to resume from,
    # and the TensorBoard logs the README describes
    assert config.caption_extension == ".txt" and config.origin["caption_extension"] == str(path)
    assert config.save_state and config.log_with == "tensorboard"


@pytest.mark.parametrize("algorithm", list(ALGORITHMS))
def test_quickstart_config_per_algorithm(tmp_path, algorithm):
    config = load_config(quickstart_config(tmp_path, algorithm, max_train_epochs=2))
    assert config.network_module == ALGORITHMS[algorithm]["network_module"]
    assert config.max_train_epochs == 2
    assert config.dataset_config.endswith("dataset/dataset.toml") and config.output_dir.endswith("output")
    assert (tmp_path / "dataset" / "train" / demo.FOLDER / "00.png").exists()


def test_unknown_algorithm_is_refused(tmp_path):
    with pytest.raises(QuickstartError, match="choose one of lora, locon, loha, lokr"):
        quickstart_config(tmp_path, "dora")


def test_a_missing_tiny_model_says_how_to_get_it_back(monkeypatch):
    from lorakit.quickstart import run

    monkeypatch.setattr(run, "MODEL_FILE", "no-such-model.safetensors")
    with pytest.raises(QuickstartError, match="tiny base model is missing.*scripts/pretrain_tiny.py"):
        run.tiny_model_path()


def test_a_broken_demo_picture_stops_the_quickstart_before_training(tmp_path, monkeypatch, capsys):
    from lorakit.quickstart import run

    broken = tmp_path / "qs" / "dataset" / "train" / demo.FOLDER / "00.png"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"not a picture")  # kept: the demo writer leaves existing pictures alone
    monkeypatch.setattr("lorakit.training.recipe.train", lambda *a, **k: pytest.fail("trained anyway"))
    with pytest.raises(QuickstartError, match="the demo dataset .*dataset.toml has errors"):
        run.run_quickstart(tmp_path / "qs")
    assert "00.png" in capsys.readouterr().out  # the dataset report names the file


def test_readme_help_and_results_give_one_measured_quickstart_time(capsys):
    import re
    from pathlib import Path

    from lorakit.cli.main import main
    from lorakit.quickstart.run import MEASURED_TIME

    root = Path(__file__).resolve().parents[1]
    results = (root / "benchmarks" / "RESULTS.md").read_text(encoding="utf-8")
    section = results.split("## The quickstart, end to end", 1)[1]
    row = next(line for line in section.splitlines() if line.startswith("| 20"))
    runs = [float(x) for x in re.findall(r"\| (\d+\.\d) s", row)]
    assert MEASURED_TIME == f"{round(min(runs))}-{round(max(runs))} s"  # the runs of the table
    assert f"({MEASURED_TIME} measured" in (root / "README.md").read_text(encoding="utf-8")
    with pytest.raises(SystemExit):
        main(["quickstart", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"{MEASURED_TIME} on a 2-core CPU" in text and "minutes" not in text
    assert main([]) == 1
    assert f"({MEASURED_TIME} on a 2-core CPU)" in " ".join(capsys.readouterr().out.split())


def test_the_summary_names_files_relative_to_the_folder_the_user_gave(tmp_path, monkeypatch):
    from pathlib import Path

    from lorakit.quickstart.run import QuickstartResult, summary

    monkeypatch.chdir(tmp_path)
    out = Path("lorakit-quickstart")  # as `lorakit quickstart` gets it: relative
    output = out.resolve() / "output"  # the config's paths are absolute
    result = QuickstartResult(
        out=out, config=out / "lorakit-quickstart.toml", dataset=out / "dataset",
        lora=output / "ohwx-magenta.safetensors", epoch_files=[output / "ohwx-magenta-000001.safetensors"],
        previews=[output / "sample" / "ohwx-magenta_e000000_strip.png"],
        grids=[output / "grid" / f"prompt-0{i}" / "grid.png" for i in (1, 2)], loss_plot=output / "ohwx-magenta-loss.png",
        record=output / "run.json", seconds=80, epochs=1,
        concept={"trigger, LoRA 1.0": 1.0, "trigger, LoRA 0": 0.0, "no trigger, LoRA 1.0": 0.0},
        controls=[("red circle, gray background", "red", "red")],
    )  # fmt: skip
    text = summary(result, 16)
    assert str(tmp_path) not in text
    for row in ("output/ohwx-magenta.safetensors", "output/grid/prompt-NN/grid.png", "output/run.json"):
        assert f"\n  {row} " in text
    assert "tensorboard --logdir lorakit-quickstart/output/logs" in text
    assert "'red circle, gray background': red before training, red after epoch 1 (unchanged)" in text
