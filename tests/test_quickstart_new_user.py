"""What a new user meets after `lorakit quickstart`: control previews that show what they name,
and a first own LoRA from the quickstart template, copied and changed as its top comment says
(dataset_config replaced by a train_data_dir of pictures with .txt captions), which trains on
those captions; the template without its caption_extension line stops before the first step."""

import json

import pytest
import torch
from PIL import Image

from lorakit.errors import DatasetError
from lorakit.models.load import load_model
from lorakit.quickstart import demo, shapes
from lorakit.quickstart.run import fill_template, template_text, tiny_model_path
from lorakit.quickstart.score import read_image
from lorakit.training.config import load_config
from lorakit.training.previews import PreviewOptions, load_preview_prompts, make_previews
from lorakit.training.recipe import train

IMAGES = 4


def test_the_control_previews_show_what_they_name_on_the_base_model(tmp_path):
    """The quickstart's previews before training (e000000) are the base model's pictures of the
    sample prompts; a control prompt (no trigger word) must show its colour and shape there, or
    its preview cannot show that the LoRA leaves other prompts alone."""
    data = demo.write_demo(tmp_path / "dataset")
    prompts = load_preview_prompts(data.sample_prompts)
    controls = [(i, p) for i, p in enumerate(prompts) if demo.TRIGGER not in p.prompt]
    assert [p.prompt for _, p in controls] == [demo.control_prompt(c, s, b) for c, s, b, _ in demo.CONTROLS]
    assert [p.seed for _, p in controls] == [seed for *_, seed in demo.CONTROLS]
    model = load_model(tiny_model_path(), dtype=torch.float32)
    options = PreviewOptions(sample_sampler="dpmsolver++")  # the template's, as the quickstart draws them
    files, _ = make_previews(
        model, torch.nn.Linear(1, 1), prompts, options, tmp_path / "sample", "q", "e000000"
    )
    for (index, _), (colour, shape, _, _) in zip(controls, demo.CONTROLS):
        reading = read_image(Image.open(files[index]))
        assert (reading.colour, reading.shape) == (colour, shape), files[index].name


def own_pictures(root):
    """root/4_ohwx shape/: magenta pictures with .txt captions, as a tagger writes them."""
    folder = root / f"{IMAGES}_ohwx shape"
    folder.mkdir(parents=True)
    for i, (picture, caption) in enumerate(demo.demo_pictures()[:IMAGES]):
        shapes.draw(picture).save(folder / f"{i:02d}.png")
        (folder / f"{i:02d}.txt").write_text(caption + "\n", encoding="utf-8")
    return root


def my_config(tmp_path, keep=lambda line: True):
    """The template as the top comment says to change it, for one short epoch."""
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("ohwx, circle, white background --d 1 --s 2\n", encoding="utf-8")
    lines = [
        line
        for line in template_text().splitlines()
        if not line.startswith("dataset_config") and keep(line)  # "delete this line"
    ]
    values = {
        "pretrained_model_name_or_path": tiny_model_path().as_posix(),
        "train_data_dir": own_pictures(tmp_path / "pictures").as_posix(),
        "sample_prompts": prompts.as_posix(),
        "output_dir": (tmp_path / "output").as_posix(),
        "output_name": "my-first-lora",
        "max_train_epochs": 1,
    }
    path = tmp_path / "my-config.toml"
    path.write_text(fill_template("\n".join(lines), values), encoding="utf-8")
    return load_config(path)


def test_the_copied_template_trains_on_the_txt_captions(tmp_path):
    config = my_config(tmp_path)
    assert config.caption_extension == ".txt" and config.save_state and config.log_with == "tensorboard"
    result = train(config, quiet=True)
    record = json.loads(result.record.read_text(encoding="utf-8"))
    assert record["dataset"]["captions"] == {"file": IMAGES}  # every picture trained on its caption
    assert result.final_file.exists() and (tmp_path / "output" / "my-first-lora-state").is_dir()
    assert list(
        (tmp_path / "output" / "logs").rglob("events.out.tfevents.*")
    )  # the README's TensorBoard logs


def test_without_the_caption_extension_line_training_stops_before_the_first_step(tmp_path):
    config = my_config(tmp_path, keep=lambda line: not line.startswith("caption_extension"))
    assert config.caption_extension == ".caption"  # sd-scripts' default
    with pytest.raises(DatasetError, match=r'set caption_extension = "\.txt"'):
        train(config, quiet=True)
    assert not (tmp_path / "output").exists()  # nothing trained, nothing written
