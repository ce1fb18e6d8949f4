"""DreamBooth (full fine-tune) step time and peak memory with each memory option, on the full-size
random-weight SD1.5 at 256x256, batch 1, latents encoded once beforehand.

Each configuration runs in its own process (its peak RSS is its own): lorakit with AdamW in fp32
(U-Net alone and U-Net + text encoder, the SD1 default), then one memory option at a time
(gradient checkpointing, Adafactor with the fused backward pass, 8-bit AdamW, full_bf16,
cache_text_encoder_outputs), then all of them together. The reference is a plain loop doing what
diffusers' train_dreambooth.py does by default (U-Net alone, AdamW fp32, the caption encoded
every step), timed in the same run. A configuration whose estimated memory exceeds what the
machine has free is skipped and said so; 8-bit AdamW is skipped when bitsandbytes is missing.

    python benchmarks/dreambooth_memory.py [--steps 2] [--warmup 1] [--checkpoint FILE] [--only NAME ...]

The checkpoint defaults to /work/perf-data/sd15-random.safetensors when it exists, else one is
written (random weights, fp16, 2 GB, about 20 s). Prints a table and writes
benchmarks/out/dreambooth_memory.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from train_step_speed import RESOLUTION, make_inputs, peak_rss_gb

SHARED_CHECKPOINT = Path("/work/perf-data/sd15-random.safetensors")
UNET, TEXT = 859_520_964, 123_060_480  # SD1.5's U-Net and CLIP-L parameters

BASE = {"optimizer_type": "AdamW", "mixed_precision": "no", "train_text_encoder": True}
CONFIGS: dict[str, dict] = {
    "U-Net only, AdamW fp32": {**BASE, "train_text_encoder": False},
    "U-Net + TE, AdamW fp32": BASE,
    "U-Net only, + gradient_checkpointing": {
        **BASE,
        "train_text_encoder": False,
        "gradient_checkpointing": True,
    },
    "+ Adafactor, fused_backward_pass": {
        **BASE,
        "optimizer_type": "Adafactor",
        "optimizer_args": ["relative_step=False", "scale_parameter=False", "warmup_init=False"],
        "fused_backward_pass": True,
    },
    "+ AdamW8bit": {**BASE, "optimizer_type": "AdamW8bit"},
    "+ full_bf16": {**BASE, "full_bf16": True, "mixed_precision": "bf16"},
    "U-Net only, + cache_text_encoder_outputs": {
        **BASE,
        "train_text_encoder": False,
        "cache_text_encoder_outputs": True,
    },
    "all: checkpointing, Adafactor fused, full_bf16, cached TE": {
        **BASE,
        "train_text_encoder": False,
        "cache_text_encoder_outputs": True,
        "gradient_checkpointing": True,
        "optimizer_type": "Adafactor",
        "optimizer_args": ["relative_step=False", "scale_parameter=False", "warmup_init=False"],
        "fused_backward_pass": True,
        "full_bf16": True,
        "mixed_precision": "bf16",
    },
}
REFERENCE = "reference: diffusers train_dreambooth.py loop (U-Net only, AdamW fp32)"


def estimate_gb(options: dict) -> float:
    """Weights, gradients and optimizer state of what trains, plus the frozen rest and ~1 GB of
    activations: the figure a configuration is skipped by (the reference measured 14.97 GB where
    this says 14.8)."""
    trained = UNET + (TEXT if options.get("train_text_encoder") else 0)
    width = 2 if options.get("full_bf16") else 4
    grads = 0 if options.get("fused_backward_pass") else width
    state = {"AdamW": 2 * width, "AdamW8bit": 2, "Adafactor": 0.1 * width}[options["optimizer_type"]]
    frozen = (UNET + TEXT) * 4 - trained * 4 + 0.4e9  # the VAE and the encoders that do not train
    return (trained * (width + grads + state) + frozen) / 1e9 + 1.0


def available_gb() -> float:
    with open("/proc/meminfo") as f:
        fields = dict(line.split(":", 1) for line in f)
    return int(fields["MemAvailable"].split()[0]) / 1024**2


def run_lorakit(checkpoint: Path, train_dir: Path, options: dict, steps: int, warmup: int, out: Path) -> dict:
    from lorakit.training.config import load_config
    from lorakit.training.recipe import train

    values = {
        "pretrained_model_name_or_path": str(checkpoint),
        "train_data_dir": str(train_dir),
        "caption_extension": ".txt",
        "resolution": str(RESOLUTION),
        "training_type": "dreambooth",
        "learning_rate": 1e-6,
        "max_train_steps": warmup + steps,
        "cache_latents": True,
        "output_dir": str(out),
        "log_with": "none",
        "seed": 0,
        **options,
    }
    times: list[float] = []
    train(
        load_config(None, values),
        quiet=True,
        on_step=lambda *_: times.append(time.perf_counter()),
        save_files=False,
    )
    timed = times[warmup - 1 :]
    return {"s_per_step": (timed[-1] - timed[0]) / (len(timed) - 1), "peak_rss_gb": peak_rss_gb()}


def run_reference(checkpoint: Path, train_dir: Path, steps: int, warmup: int) -> dict:
    """diffusers' train_dreambooth.py defaults: the U-Net trains in fp32 with AdamW, the caption
    goes through the frozen text encoder every step, latents come from the VAE beforehand here."""
    import numpy as np
    import torch
    from diffusers import DDPMScheduler
    from PIL import Image

    from lorakit.models.load import load_model

    model = load_model(checkpoint, dtype=torch.float32)  # loading is not timed; the loop is
    unet, vae, text_encoder, tokenizer = model.unet, model.vae, model.text_encoders[0], model.tokenizers[0]
    text_encoder.requires_grad_(False)
    vae.requires_grad_(False)
    unet.train().requires_grad_(True)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-6, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8)
    scheduler = DDPMScheduler.from_config(model.noise_scheduler().config)
    files = sorted(p for p in train_dir.rglob("*.png"))
    with torch.no_grad():
        pixels = [torch.from_numpy(np.asarray(Image.open(f).convert("RGB"), dtype=np.float32)) for f in files]
        latents = [
            vae.encode((p / 127.5 - 1).permute(2, 0, 1)[None]).latent_dist.sample() * 0.18215 for p in pixels
        ]
    captions = [f.with_suffix(".txt").read_text() for f in files]
    times = []
    for step in range(warmup + steps):
        i = step % len(files)
        ids = tokenizer(
            [captions[i]], padding="max_length", max_length=77, truncation=True, return_tensors="pt"
        ).input_ids
        with torch.no_grad():
            hidden = text_encoder(ids)[0]
        noise = torch.randn_like(latents[i])
        t = torch.randint(0, scheduler.config.num_train_timesteps, (1,))
        pred = unet(scheduler.add_noise(latents[i], noise, t), t, hidden).sample
        torch.nn.functional.mse_loss(pred.float(), noise.float()).backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter())
    timed = times[warmup - 1 :]
    return {"s_per_step": (timed[-1] - timed[0]) / (len(timed) - 1), "peak_rss_gb": peak_rss_gb()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=2, help="Timed steps per configuration.")
    parser.add_argument("--warmup", type=int, default=1, help="Untimed steps first (at least 1).")
    parser.add_argument(
        "--checkpoint", type=Path, help="An SD1.5 single file; default: the shared one or a new one."
    )
    parser.add_argument(
        "--only", nargs="*", help="Run only the configurations whose name contains one of these."
    )
    parser.add_argument("--out", default="benchmarks/out")
    parser.add_argument(
        "--child", nargs=3, metavar=("NAME", "CHECKPOINT", "TRAIN_DIR"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    args.warmup = max(1, args.warmup)

    if args.child:
        import torch

        torch.manual_seed(0)
        name, checkpoint, train_dir = args.child
        with tempfile.TemporaryDirectory() as tmp:
            if name == REFERENCE:
                result = run_reference(Path(checkpoint), Path(train_dir), args.steps, args.warmup)
            else:
                result = run_lorakit(
                    Path(checkpoint), Path(train_dir), CONFIGS[name], args.steps, args.warmup, Path(tmp)
                )
        print("RESULT " + json.dumps(result))
        return 0

    names = [REFERENCE, *CONFIGS]
    if args.only:
        names = [n for n in names if any(word in n for word in args.only)]
    out = Path(args.out)
    saved = out / "dreambooth_memory.json"
    # an earlier run's figures stay for the configurations this one does not run (--only)
    results: dict[str, dict] = json.loads(saved.read_text())["results"] if saved.exists() else {}
    with tempfile.TemporaryDirectory(prefix="lorakit-db-bench-") as tmp:
        made, train_dir = make_inputs(Path(tmp), write_model=False)
        checkpoint = args.checkpoint or (SHARED_CHECKPOINT if SHARED_CHECKPOINT.exists() else None)
        if checkpoint is None:
            import torch

            from lorakit.models.tiny import write_checkpoint

            checkpoint = write_checkpoint(made, "sd1", size="full", dtype=torch.float16)
        for name in names:
            options = CONFIGS.get(name, {**BASE, "train_text_encoder": False})
            need, free = estimate_gb(options), available_gb()
            if options["optimizer_type"] == "AdamW8bit" and importlib.util.find_spec("bitsandbytes") is None:
                results[name] = {"skipped": "bitsandbytes is not installed"}
            elif need > free:
                results[name] = {"skipped": f"needs about {need:.1f} GB, {free:.1f} GB free"}
            else:
                command = [sys.executable, __file__, "--steps", str(args.steps), "--warmup", str(args.warmup),
                           "--child", name, str(checkpoint), str(train_dir)]  # fmt: skip
                began = time.time()
                done = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ))
                line = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
                if done.returncode or not line:
                    tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
                    results[name] = {"failed": tail[0][:300]}
                else:
                    results[name] = {
                        **json.loads(line[0][7:]),
                        "estimate_gb": need,
                        "process_s": time.time() - began,
                        "load_average": os.getloadavg()[0],
                    }
            print(f"{name}: {results[name]}", flush=True)

    device = f"CPU ({os.cpu_count()} cores), load average {os.getloadavg()[0]:.1f}"
    print(f"\nDreamBooth SD1.5 (random weights), {RESOLUTION}px, batch 1, cached latents, {device}")
    print(f"{'configuration':<62}{'s/step':>9}{'peak RSS GB':>13}")
    for name, r in results.items():
        figures = (
            f"{r['s_per_step']:>9.1f}{r['peak_rss_gb']:>13.2f}"
            if "s_per_step" in r
            else "  " + (r.get("skipped") or "failed: " + r["failed"])
        )
        print(f"{name:<62}{figures}")
    ours, ref = results.get("U-Net only, AdamW fp32", {}), results.get(REFERENCE, {})
    if "s_per_step" in ours and "s_per_step" in ref:  # the same work: U-Net alone, AdamW, fp32
        print(
            f"lorakit (U-Net only, AdamW fp32) speed / reference speed: {ref['s_per_step'] / ours['s_per_step']:.2f}"
        )
    out.mkdir(parents=True, exist_ok=True)
    saved.write_text(json.dumps({"device": device, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
