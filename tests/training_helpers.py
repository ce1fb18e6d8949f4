"""Small datasets and configs for the training tests."""

from pathlib import Path

from PIL import Image, ImageDraw


def make_folder_dataset(root: Path, images: int = 2, repeats: int = 1, name: str = "sks star") -> Path:
    """A kohya tree: root/train/{repeats}_{name}/*.png with .txt captions."""
    folder = root / "train" / f"{repeats}_{name}"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(images):
        image = Image.new("RGB", (64, 64), "white")
        ImageDraw.Draw(image).ellipse([8 + 4 * i, 8, 52, 52], fill=(220, 0, 220))
        image.save(folder / f"{i}.png")
        (folder / f"{i}.txt").write_text(f"sks, magenta circle {i}, white background")
    return root / "train"


def write_config(path: Path, model: Path, body: str) -> Path:
    path.write_text(f'pretrained_model_name_or_path = "{model.as_posix()}"\n' + body)
    return path
