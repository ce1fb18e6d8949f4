"""Training speed and memory: lorakit against a plain diffusers + peft loop doing the same work.

Both train a LoRA of rank 32 (alpha 32) on the U-Net attention/projection/feed-forward layers of a
full-size random-weight SD1.5 checkpoint (the same file, created here), at 256x256, batch 1, with
the latents encoded once beforehand, AdamW at 1e-4, the DDPM epsilon loss. Each implementation runs
in its own process so its peak RSS is its own.

    pip install peft        # the reference needs it
    python benchmarks/train_step_speed.py [--steps 6] [--warmup 2] [--precision no|bf16]

Prints a table and writes benchmarks/out/train_step_speed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RANK = 32
RESOLUTION = 256
TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2"]


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def make_inputs(folder: Path, write_model: bool = True) -> tuple[Path, Path]:
    """The random SD1.5 file (unless `write_model` is off: then only its path) and 4 random pictures."""
    import torch
    from PIL import Image

    from lorakit.models.tiny import write_checkpoint

    checkpoint = folder / "sd15-random.safetensors"
    if write_model:
        write_checkpoint(checkpoint, "sd1", size="full", dtype=torch.float16)
    images = folder / "train" / "1_subject"
    images.mkdir(parents=True)
    g = torch.Generator().manual_seed(0)
    for i in range(4):
        pixels = (torch.rand(RESOLUTION, RESOLUTION, 3, generator=g) * 255).byte().numpy()
        Image.fromarray(pixels).save(images / f"{i}.png")
        (images / f"{i}.txt").write_text(f"subject, picture {i}")
    return checkpoint, folder / "train"


def run_lorakit(checkpoint: Path, train_dir: Path, steps: int, warmup: int, precision: str, out: Path) -> dict:
    from lorakit.training.config import load_config
    from lorakit.training.recipe import train

    config = load_config(
        None,
        {
            "pretrained_model_name_or_path": str(checkpoint),
            "train_data_dir": str(train_dir),
            "caption_extension": ".txt",
            "resolution": str(RESOLUTION),
            "network_dim": RANK,
            "network_alpha": RANK,
            "network_train_unet_only": True,
            "learning_rate": 1e-4,
            "max_train_steps": warmup + steps,
            "cache_latents": True,
            "mixed_precision": precision,
            "output_dir": str(out),
            "log_with": "none",
            "seed": 0,
        },
    )
    times: list[float] = []
    train(config, quiet=True, on_step=lambda *_: times.append(time.perf_counter()), save_files=False)
    timed = times[warmup:]
    return {"steps_per_s": (len(timed) - 1) / (timed[-1] - timed[0]), "peak_rss_gb": peak_rss_gb()}


def run_reference(
    checkpoint: Path, train_dir: Path, steps: int, warmup: int, precision: str, rank: int = RANK, alpha: float = RANK
) -> dict:
    """What the diffusers example scripts do: peft LoRA on the U-Net, text encoded every step."""
    import torch
    from diffusers import DDPMScheduler
    from peft import LoraConfig
    from PIL import Image

    from lorakit.models.load import load_model

    model = load_model(checkpoint, dtype=torch.float32)  # loading is not timed; the loop is
    unet, vae, text_encoder, tokenizer = model.unet, model.vae, model.text_encoders[0], model.tokenizers[0]
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    unet.to(dtype)
    text_encoder.to(dtype)
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=alpha, init_lora_weights="gaussian", target_modules=TARGETS))
    for p in unet.parameters():
        if p.requires_grad:
            p.data = p.data.float()
    params = [p for p in unet.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    scheduler = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000)
    files = sorted(train_dir.glob("*/*.png"))
    latents, captions = [], []
    with torch.no_grad():
        for f in files:
            picture = Image.open(f).convert("RGB")
            pixels = torch.tensor(list(picture.getdata()), dtype=torch.float32).view(picture.height, picture.width, 3)
            image = (pixels / 127.5 - 1).permute(2, 0, 1)[None]
            latents.append(vae.encode(image).latent_dist.mean * vae.config.scaling_factor)
            captions.append(f.with_suffix(".txt").read_text())
    times = []
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")
    for step in range(warmup + steps):
        i = step % len(files)
        with autocast:
            ids = tokenizer([captions[i]], padding="max_length", max_length=77, return_tensors="pt").input_ids
            with torch.no_grad():
                hidden = text_encoder(ids).last_hidden_state
            noise = torch.randn_like(latents[i])
            t = torch.randint(0, 1000, (1,))
            noisy = scheduler.add_noise(latents[i], noise, t)
            pred = unet(noisy.to(dtype), t, hidden.to(dtype)).sample
        loss = torch.nn.functional.mse_loss(pred.float(), noise)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter())
    timed = times[warmup:]
    return {"steps_per_s": (len(timed) - 1) / (timed[-1] - timed[0]), "peak_rss_gb": peak_rss_gb()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=6, help="Timed steps per implementation.")
    parser.add_argument("--warmup", type=int, default=2, help="Untimed steps first.")
    parser.add_argument("--precision", default="no", choices=["no", "bf16"])
    parser.add_argument("--out", default="benchmarks/out")
    parser.add_argument("--child", nargs=3, metavar=("IMPL", "CHECKPOINT", "TRAIN_DIR"), help=argparse.SUPPRESS)
    parser.add_argument("--child-toml", help=argparse.SUPPRESS)  # the reference side of vs_sd_scripts.py
    args = parser.parse_args(argv)

    if args.child_toml:
        import tomllib
        import torch

        torch.manual_seed(0)
        c = tomllib.loads(Path(args.child_toml).read_text())
        precision = "bf16" if c.get("mixed_precision") == "bf16" else "no"
        run_reference(
            Path(c["pretrained_model_name_or_path"]), Path(c["train_data_dir"]), c["max_train_steps"], 0,
            precision, c.get("network_dim", RANK), c.get("network_alpha", RANK),
        )  # fmt: skip
        return 0

    if args.child:
        import torch

        torch.manual_seed(0)
        impl, checkpoint, train_dir = args.child
        with tempfile.TemporaryDirectory() as tmp:
            if impl == "lorakit":
                result = run_lorakit(Path(checkpoint), Path(train_dir), args.steps, args.warmup, args.precision, Path(tmp))
            else:
                result = run_reference(Path(checkpoint), Path(train_dir), args.steps, args.warmup, args.precision)
        print("RESULT " + json.dumps(result))
        return 0

    results = {}
    with tempfile.TemporaryDirectory(prefix="lorakit-bench-") as tmp:
        checkpoint, train_dir = make_inputs(Path(tmp))
        for impl in ("reference", "lorakit"):
            command = [sys.executable, __file__, "--steps", str(args.steps), "--warmup", str(args.warmup),
                       "--precision", args.precision, "--child", impl, str(checkpoint), str(train_dir)]  # fmt: skip
            done = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ))
            line = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
            if done.returncode or not line:
                print(done.stdout[-2000:], done.stderr[-4000:], file=sys.stderr)
                return 1
            results[impl] = json.loads(line[0][7:])
    import torch

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
    print(f"SD1.5 LoRA rank {RANK}, {RESOLUTION}px, batch 1, cached latents, precision {args.precision}, {device}")
    print(f"{'implementation':<22}{'steps/s':>10}{'s/step':>10}{'peak RSS GB':>14}")
    for impl, r in results.items():
        label = "diffusers + peft" if impl == "reference" else "lorakit"
        print(f"{label:<22}{r['steps_per_s']:>10.3f}{1 / r['steps_per_s']:>10.2f}{r['peak_rss_gb']:>14.2f}")
    ratio = results["lorakit"]["steps_per_s"] / results["reference"]["steps_per_s"]
    print(f"lorakit speed / reference speed: {ratio:.2f}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "train_step_speed.json").write_text(json.dumps({"device": device, "precision": args.precision, **results, "ratio": ratio}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
