"""The demo dataset: pictures of a colour the tiny base model has never seen (magenta), taught
to a LoRA under a trigger word.

Written on first use from `shapes` (no download), in the kohya folder layout that most LoRA
tutorials use: `train/10_ohwx shape/` holds the pictures and one `.txt` caption per picture,
and the 10 in the folder name is how many times each picture is repeated per epoch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from . import shapes

TRIGGER = "ohwx"  # one CLIP token, in no caption the base model was trained on
CONCEPT = shapes.HELD_OUT_COLOUR
IMAGES = 10
REPEATS = 10
FOLDER = f"{REPEATS}_{TRIGGER} shape"
REG_FOLDER = "1_shape"
SEED = 20240


@dataclass(frozen=True)
class DemoDataset:
    root: Path
    train_dir: Path  # the folder that holds the N_name folders (train_data_dir)
    reg_dir: Path  # regularization pictures (reg_data_dir)
    images: list[Path]
    sample_prompts: Path
    config: Path  # dataset.toml: the two folders as sd-scripts dataset subsets


def demo_pictures() -> list[tuple[shapes.Picture, str]]:
    """(picture, caption) pairs: every shape on every background, in magenta, captioned with
    tags that start with the trigger word and name what is not the concept (shape, background),
    so the trigger word takes the part no tag explains: the colour."""
    out = []
    backgrounds = list(shapes.BACKGROUNDS)
    for i in range(IMAGES):
        shape = shapes.SHAPES[i % len(shapes.SHAPES)]
        background = backgrounds[(i // len(shapes.SHAPES) + i) % len(backgrounds)]
        p = shapes.picture(SEED + i, shape=shape, colour=CONCEPT, background=background)
        out.append((p, f"{TRIGGER}, {p.shape}, {p.background} background"))
    return out


def reg_pictures() -> list[tuple[shapes.Picture, str]]:
    """Regularization pictures (DreamBooth's "prior preservation"): the colours the model
    already knows, captioned without the trigger. Trained alongside the demo pictures, they
    teach the LoRA what must not change: a red circle stays red."""
    out = []
    backgrounds = list(shapes.BACKGROUNDS)
    colours = list(shapes.COLOURS)
    for i in range(IMAGES):
        p = shapes.picture(
            SEED + 1000 + i,
            shape=shapes.SHAPES[i % 3],
            colour=colours[i % len(colours)],
            background=backgrounds[(i + i // 3) % 3],
        )
        out.append((p, f"{p.colour} {p.shape}, {p.background} background"))
    return out


# Control prompts: no trigger word, in colours next to magenta on the colour wheel (red and
# blue), where a LoRA that leaks would show first. Each is one the base model draws right at its
# preview seed (tests/test_quickstart_score.py checks it with the concept score), so its preview
# before training shows what must stay the same. (colour, shape, background, seed)
CONTROLS = (("red", "circle", "gray", 1), ("blue", "square", "white", 2))


def control_prompt(colour: str, shape: str, background: str) -> str:
    return f"{colour} {shape}, {background} background"


# sd-scripts prompt-file syntax: the prompt, then --n negative prompt, --d seed, --l guidance
# scale (CFG), --s sampling steps, --w/--h size.
SAMPLE_PROMPTS = f"""# Preview prompts (sd-scripts syntax): --d seed, --l guidance scale, --s steps.
{TRIGGER}, circle, white background --d 1 --l 5 --s 12
{TRIGGER}, triangle, gray background --d 2 --l 5 --s 12
{TRIGGER}, square, black background --d 3 --l 5 --s 12
# controls, without the trigger word: these should look the same before and after training
""" + "".join(f"{control_prompt(c, s, b)} --d {seed} --l 5 --s 12\n" for c, s, b, seed in CONTROLS)


REG_CAPTION_DROPOUT = 0.3

# An sd-scripts dataset config (--dataset_config). It lists the same N_name folders that
# train_data_dir / reg_data_dir would find, plus one setting folders cannot carry: caption dropout
# on the regularization pictures only.
DATASET_TOML = """# The demo dataset as an sd-scripts dataset config (dataset_config = this file).
# Each [[datasets.subsets]] is one folder of pictures with .txt captions.
[general]
caption_extension = ".txt"

[[datasets]]

[[datasets.subsets]]
image_dir = "{train}"
num_repeats = {repeats}  # each picture {repeats} times per epoch (the 10 of "10_ohwx shape")

[[datasets.subsets]]
image_dir = "{reg}"
is_reg = true  # regularization: what the LoRA must leave as it is
num_repeats = 1
# In {dropout_percent}% of their steps these pictures are trained with an empty caption. The empty
# caption is the "unconditional" side of guidance (CFG); training it on the base model's own
# kind of pictures keeps the LoRA from moving it towards the new concept, which guidance would
# then subtract again. Without it, a small LoRA learns a new colour much more slowly.
caption_dropout_rate = {dropout}
"""


def _write_pictures(folder: Path, pictures: list[tuple[shapes.Picture, str]]) -> list[Path]:
    """NN.png and its NN.txt caption per picture; pictures already on disk are kept."""
    folder.mkdir(parents=True, exist_ok=True)
    images = []
    for i, (p, caption) in enumerate(pictures):
        image = folder / f"{i:02d}.png"
        if not image.exists():
            shapes.draw(p).save(image)
        (folder / f"{i:02d}.txt").write_text(caption + "\n", encoding="utf-8")
        images.append(image)
    return images


def write_demo(root: str | Path) -> DemoDataset:
    """Write the dataset under `root` (pictures that already exist are kept as they are)."""
    root = Path(root)
    folder, reg = root / "train" / FOLDER, root / "reg" / REG_FOLDER
    images = _write_pictures(folder, demo_pictures())
    _write_pictures(reg, reg_pictures())
    prompts = root / "sample_prompts.txt"
    prompts.write_text(SAMPLE_PROMPTS, encoding="utf-8")
    config_file = root / "dataset.toml"
    config_file.write_text(
        DATASET_TOML.format(
            train=folder.resolve().as_posix(),
            reg=reg.resolve().as_posix(),
            repeats=REPEATS,
            dropout=REG_CAPTION_DROPOUT,
            dropout_percent=round(REG_CAPTION_DROPOUT * 100),
        ),
        encoding="utf-8",
    )
    return DemoDataset(root, root / "train", root / "reg", images, prompts, config_file)
