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
SEED = 20240


@dataclass(frozen=True)
class DemoDataset:
    root: Path
    train_dir: Path  # the folder that holds the N_name folders (train_data_dir)
    images: list[Path]
    sample_prompts: Path


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


# sd-scripts prompt-file syntax: the prompt, then --n negative prompt, --d seed, --l guidance
# scale (CFG), --s sampling steps, --w/--h size.
SAMPLE_PROMPTS = f"""# Preview prompts (sd-scripts syntax): --d seed, --l guidance scale, --s steps.
{TRIGGER}, circle, white background --d 1 --l 5 --s 12
{TRIGGER}, triangle, gray background --d 2 --l 5 --s 12
{TRIGGER}, square, black background --d 3 --l 5 --s 12
red circle, white background --d 1 --l 5 --s 12
"""


def write_demo(root: str | Path) -> DemoDataset:
    """Write the dataset under `root` (pictures that already exist are kept as they are)."""
    root = Path(root)
    folder = root / "train" / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    images = []
    for i, (p, caption) in enumerate(demo_pictures()):
        image = folder / f"{i:02d}.png"
        if not image.exists():
            shapes.draw(p).save(image)
        (folder / f"{i:02d}.txt").write_text(caption + "\n", encoding="utf-8")
        images.append(image)
    prompts = root / "sample_prompts.txt"
    prompts.write_text(SAMPLE_PROMPTS, encoding="utf-8")
    return DemoDataset(root, root / "train", images, prompts)
