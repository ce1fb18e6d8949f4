"""The fault suite's tools, shared by tests/reliability (the fast cases) and benchmarks/faults.py
(the long one): a small real training run as a subprocess, killed at chosen or random moments,
resumed, and its folder checked for what a crash must never leave behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from safetensors import safe_open

SRC = Path(__file__).resolve().parents[2] / "src"
TINY = SRC / "lorakit" / "quickstart" / "lorakit-tiny.safetensors"


def write_dataset(root: Path, images: int = 3, repeats: int = 2) -> Path:
    """A kohya tree of coloured 32x32 pictures with .txt captions; returns the train folder."""
    from PIL import Image, ImageDraw

    folder = root / "train" / f"{repeats}_sks shape"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(images):
        image = Image.new("RGB", (32, 32), "white")
        ImageDraw.Draw(image).ellipse([4 + i, 4, 26, 28], fill=(220, 20 * i, 220))
        image.save(folder / f"{i}.png")
        (folder / f"{i}.txt").write_text(f"sks, magenta circle {i}, white background, tag{i}")
    return root / "train"


CONFIGS = {
    # cached latents, no augmentation
    "cached": {"cache_latents": True},
    # images loaded every step with flips and shuffled tags, a loader worker, accumulation
    "augmented": {
        "flip_aug": True,
        "shuffle_caption": True,
        "max_data_loader_n_workers": 1,
        "gradient_accumulation_steps": 2,
        "network_dropout": 0.1,
    },
}


def write_config(root: Path, kind: str = "cached", epochs: int = 3, **options) -> Path:
    """A training config for a few steps of the shipped tiny model; `options` override."""
    from lorakit.training.config import toml_value

    values = {
        "pretrained_model_name_or_path": TINY.as_posix(),
        "train_data_dir": write_dataset(root).as_posix(),
        "caption_extension": ".txt",
        "resolution": "32",
        "bucket_reso_steps": 32,
        "network_dim": 4,
        "network_alpha": 4,
        "learning_rate": 2e-3,
        "max_train_epochs": epochs,
        "seed": 3,
        "lr_scheduler": "cosine",
        "noise_offset": 0.05,
        "save_every_n_epochs": 1,
        "save_every_n_steps": 1,
        "save_state": True,
        "save_last_n_steps": 2,
        "save_last_n_steps_state": 2,
        "log_with": "none",
        "output_name": "f",
        "output_dir": (root / "out").as_posix(),
        **CONFIGS[kind],
        **options,
    }
    path = root / "config.toml"
    path.write_text("".join(f"{k} = {toml_value(v)}\n" for k, v in values.items()))
    return path


def environment(fault: str | None = None) -> dict:
    env = dict(os.environ, PYTHONPATH=str(SRC), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    env.pop("LORAKIT_FAULT", None)
    if fault:
        env["LORAKIT_FAULT"] = fault
    return env


def command(config: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "lorakit.cli.main", "train", str(config), "--quiet", *extra]


def run(
    config: Path, *extra: str, fault: str | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    return subprocess.run(
        command(config, *extra), env=environment(fault), capture_output=True, text=True, timeout=timeout
    )


def run_killed_after(config: Path, seconds: float, *extra: str) -> int:
    """Start a training, kill -9 it after `seconds` (if still running); its exit code."""
    child = subprocess.Popen(
        command(config, *extra), env=environment(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        child.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        child.send_signal(signal.SIGKILL)
        child.wait()
    return child.returncode


def finish(config: Path, attempts: int = 4) -> subprocess.CompletedProcess:
    """Resume (--resume auto) until the run ends (or `attempts` runs); a run killed before its
    first state starts again from the beginning."""
    result = None
    for _ in range(attempts):
        has_state = any((config.parent / "out").glob("f*-state"))
        result = run(config, *(["--resume", "auto"] if has_state else ["--overwrite"]))
        if result.returncode == 0:
            return result
    return result


def weights(path: Path) -> dict:
    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def same_weights(a: Path, b: Path) -> bool:
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(bool((wa[k] == wb[k]).all()) for k in wa)


def damage(folder: Path) -> dict[str, list[str]]:
    """What a crash must never leave: half-written temporary folders, files that do not load,
    and run.json listing files that are not there or missing files that are."""
    leftovers = sorted(str(p) for p in folder.rglob(".*.tmp"))
    unreadable = []
    for path in folder.rglob("*.safetensors"):
        try:
            weights(path)
        except Exception:  # noqa: BLE001 - any failure to read is what we count
            unreadable.append(str(path))
    for path in folder.rglob("*.json"):
        try:
            json.loads(path.read_text())
        except ValueError:
            unreadable.append(str(path))
    listed_wrong = []
    record = folder / "run.json"
    if record.exists():
        listed = set(json.loads(record.read_text()).get("files", []))
        present = {str(p) for p in folder.iterdir() if p.name.startswith("f") and not p.name.startswith(".")}
        present |= (
            {str(p) for p in (folder / "sample").glob("f_*.png")} if (folder / "sample").is_dir() else set()
        )
        listed_wrong = sorted(listed ^ present)
    return {"leftovers": leftovers, "unreadable": unreadable, "listed_wrong": listed_wrong}


def timed(fn, *args, **kwargs):
    began = time.time()
    value = fn(*args, **kwargs)
    return value, time.time() - began
