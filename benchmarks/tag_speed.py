"""Images per second of `lorakit tag` against a plain onnxruntime loop, on a random-weight tagger of
the size of SmilingWolf's WD14 ConvNeXt (ConvNeXt-Base at 448 px, 9083 tags: about 97M
parameters), built and exported to ONNX here with the real signature (NHWC float32 BGR 0-255
in, sigmoid scores out).

    python benchmarks/tag_speed.py [--images 16] [--repeats 2] [--out DIR]

Both read the same images from disk, prepare the same pixels (composite on white, BGR, centred
white square, area shrink), run the same onnxruntime session and write one tag file per image; the
plain loop does it all in one thread with Pillow, lorakit with its library (`tag_folder`, the
function `lorakit tag` calls). The two take turns on chunks of 8 images (ABBA order, `--repeats`
rounds), so that the changing load of a shared machine falls on both alike. Prints a table and writes benchmarks/out/tag_speed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from PIL import Image
from torch import nn

SIZE = 448
N_TAGS = 9083  # wd-v1-4-convnext-tagger-v2's selected_tags.csv: 4 ratings, general and character tags


class Block(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.dw = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.fc1, self.fc2 = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), 1e-6))

    def forward(self, x):
        y = self.dw(x).permute(0, 2, 3, 1)
        y = self.fc2(nn.functional.gelu(self.fc1(self.norm(y))))
        return x + (self.gamma * y).permute(0, 3, 1, 2)


class ChannelNorm(nn.LayerNorm):
    def forward(self, x):
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ConvNeXtTagger(nn.Module):
    """ConvNeXt-Base (depths 3, 3, 27, 3; widths 128-1024) with a 9083-tag sigmoid head."""

    def __init__(self, dims=(128, 256, 512, 1024), depths=(3, 3, 27, 3)):
        super().__init__()
        layers = [nn.Conv2d(3, dims[0], 4, stride=4), ChannelNorm(dims[0], eps=1e-6)]
        for i, (dim, depth) in enumerate(zip(dims, depths)):
            if i:
                layers += [ChannelNorm(dims[i - 1], eps=1e-6), nn.Conv2d(dims[i - 1], dim, 2, stride=2)]
            layers += [Block(dim) for _ in range(depth)]
        self.features = nn.Sequential(*layers)
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        self.head = nn.Linear(dims[-1], N_TAGS)

    def forward(self, x):  # (N, 448, 448, 3) BGR 0-255, as the WD14 taggers take it
        x = x.permute(0, 3, 1, 2) / 127.5 - 1
        x = self.features(x).mean(dim=(2, 3))
        return torch.sigmoid(self.head(self.norm(x)))


def build_model(folder: Path) -> tuple[Path, int]:
    torch.manual_seed(0)
    model = ConvNeXtTagger().eval()
    params = sum(p.numel() for p in model.parameters())
    path = folder / "model.onnx"
    torch.onnx.export(
        model,
        (torch.zeros(1, SIZE, SIZE, 3),),
        str(path),
        input_names=["input_1:0"],
        output_names=["predictions_sigmoid"],
        dynamic_axes={"input_1:0": {0: "N"}, "predictions_sigmoid": {0: "N"}},
        dynamo=False,
    )
    with open(folder / "selected_tags.csv", "w", encoding="utf-8") as f:
        f.write("tag_id,name,category,count\n")
        for i in range(N_TAGS):
            category = 9 if i < 4 else (4 if i >= N_TAGS - 2000 else 0)
            f.write(f"{i},tag_{i},{category},1\n")
    return path, params


def write_images(folder: Path, n: int, seed: int = 0) -> None:
    """Pictures of the sizes people tag: 512 to 1216 px, some with transparency, PNG and JPEG."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        w, h = (int(rng.integers(8, 20)) * 64 for _ in range(2))
        base = rng.integers(0, 256, (h // 16, w // 16, 3), dtype=np.uint8)
        img = Image.fromarray(base).resize((w, h), Image.Resampling.BICUBIC)
        if i % 4 == 3:
            img = img.convert("RGBA")
            img.putalpha(Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8)))
            img.save(folder / f"{i:03d}.png")
        else:
            img.save(folder / f"{i:03d}.jpg", quality=92)


def plain_pixels(path: Path) -> np.ndarray:
    """What a hand-written loop does with Pillow alone."""
    img = Image.open(path)
    img = img.convert("RGBA") if img.mode in ("RGBA", "LA", "P") else img.convert("RGB")
    if img.mode == "RGBA":
        img = Image.alpha_composite(Image.new("RGBA", img.size, (255, 255, 255, 255)), img).convert("RGB")
    side = max(img.size)
    square = Image.new("RGB", (side, side), (255, 255, 255))
    square.paste(img, ((side - img.width) // 2, (side - img.height) // 2))
    resample = Image.Resampling.BOX if side > SIZE else Image.Resampling.LANCZOS
    square = square.resize((SIZE, SIZE), resample)
    return np.asarray(square)[:, :, ::-1].astype(np.float32)


def plain_loop(session, images: list[Path], batch: int, tags: list[str]) -> None:
    name = session.get_inputs()[0].name
    for i in range(0, len(images), batch):
        paths = images[i : i + batch]
        probs = session.run(None, {name: np.stack([plain_pixels(p) for p in paths])})[0]
        for path, p in zip(paths, probs):
            chosen = [tags[j] for j in np.flatnonzero(p[4:] >= 0.35) + 4]
            path.with_suffix(".txt").write_text(", ".join(chosen) + "\n", encoding="utf-8")


def _timed(fn, *args, **kwargs) -> float:
    t = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - t


def run(n_images: int, repeats: int, work: Path) -> dict:
    from lorakit.data.images import load_image
    from lorakit.data.tagging import TagOptions, load_tagger, tag_folder

    model_path, params = build_model(work)
    chunks = [work / "images" / f"part{k}" for k in range(max(n_images // 8, 1))]
    for k, folder in enumerate(chunks):
        write_images(folder, min(8, n_images - 8 * k), seed=k)
    tagger = load_tagger(work)
    session = tagger.session  # one session (one thread pool) for both: the model's time is the same
    tags = [label.name for label in tagger.labels]
    rows = []
    for batch in (1, 8):
        plain_loop(session, _images(chunks[0])[:batch], batch, tags)  # warm up both sessions
        tag_folder(chunks[0], tagger, TagOptions(), batch_size=batch, dry_run=True)
        total = {"plain": 0.0, "lorakit": 0.0}
        for r in range(repeats):
            # ABBA over chunks of 8 images: the load of a shared machine drifts, both see the same
            for k, folder in enumerate(chunks):
                order = ("plain", "lorakit") if (r + k) % 2 == 0 else ("lorakit", "plain")
                for impl in order:
                    for f in folder.glob("*.txt"):
                        f.unlink()
                    if impl == "plain":
                        total[impl] += _timed(plain_loop, session, _images(folder), batch, tags)
                    else:
                        total[impl] += _timed(tag_folder, folder, tagger, TagOptions(), batch_size=batch)
        done = repeats * sum(len(_images(f)) for f in chunks)
        for impl, seconds in total.items():
            rows.append(
                {
                    "batch": batch,
                    "impl": impl,
                    "seconds": round(seconds, 2),
                    "images_per_s": round(done / seconds, 3),
                }
            )
        rows[-1]["vs_plain"] = round(total["plain"] / total["lorakit"], 3)
    images = [p for f in chunks for p in _images(f)]
    prep = {
        "plain": _timed(lambda: [plain_pixels(p) for p in images]) / len(images),
        "lorakit": _timed(lambda: [tagger.pixels(load_image(p)[0]) for p in images]) / len(images),
    }
    return {
        "model_params": params,
        "model_mb": round(model_path.stat().st_size / 1e6, 1),
        "images": len(images),
        "repeats": repeats,
        "rows": rows,
        "prep_ms_per_image": {k: round(1000 * v, 1) for k, v in prep.items()},
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "onnxruntime": ort.__version__,
    }


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix in (".png", ".jpg"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lorakit-tag-bench-") as tmp:
        result = run(args.images, args.repeats, Path(tmp))
    print(
        f"model: {result['model_params'] / 1e6:.1f}M parameters, {result['model_mb']} MB ONNX; {result['images']} images"
    )
    print(f"{'batch':>5}  {'impl':<8} {'seconds':>8} {'images/s':>9} {'lorakit/plain':>14}")
    for r in result["rows"]:
        ratio = f"{r['vs_plain']:.3f}" if "vs_plain" in r else ""
        print(f"{r['batch']:>5}  {r['impl']:<8} {r['seconds']:>8.2f} {r['images_per_s']:>9.3f} {ratio:>14}")
    prep = result["prep_ms_per_image"]
    print(f"preparing one image: plain {prep['plain']} ms, lorakit {prep['lorakit']} ms")
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / "tag_speed.json"
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"written {out}")


if __name__ == "__main__":
    main()
