"""Pretrain lorakit-tiny, the embedded base model of `lorakit quickstart`, from scratch.

    python scripts/pretrain_tiny.py                       # about an hour on 2 free CPU cores
    python scripts/pretrain_tiny.py --unet-steps 300      # a quick look (minutes)

Two stages, both on the synthetic pictures of `lorakit.quickstart.shapes` (plain shapes in five
colours on white, black or gray; magenta is never shown):

1. a small AutoencoderKL (32x32 RGB <-> 8x8x4 latents), then its latents are rescaled so that
   `latents * 0.18215` (SD1's fixed scaling factor) has unit spread, like a real SD VAE's;
2. the CLIP text encoder (real CLIP tokenizer) and the U-Net, together, on the frozen VAE's
   latents: epsilon prediction on SD1's own noise schedule (the one LoRA training uses), with
   min-SNR loss weighting (faster convergence), 10% empty captions (for classifier-free
   guidance) and an exponential moving average of the weights (the EMA is what is saved).

Everything is seeded: the same command gives the same file on the same machine and library
versions (CPU kernels differ between machines in the last bits). Each stage saves its state
in --work, and a rerun continues from there. The result is one fp16 `.safetensors` file in the
A1111 single-file layout, loaded by `lorakit.models.load.load_model` like any checkpoint, and an
evaluation table (`--work/eval.json`): for every (shape, colour) pair, the share of 16 seeds
whose picture the concept score reads as that colour and shape. See docs/tiny-model.md.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from lorakit.models.conditioning import encode, tokenize  # noqa: E402
from lorakit.models.families import SD1  # noqa: E402
from lorakit.models.model import StableDiffusionModel  # noqa: E402
from lorakit.models.save import save_single_file  # noqa: E402
from lorakit.models.tokenizers import clip_tokenizer  # noqa: E402
from lorakit.quickstart import shapes  # noqa: E402
from lorakit.training.loss import LossOptions, snr_weight  # noqa: E402

DEFAULT_OUT = ROOT / "src" / "lorakit" / "quickstart" / "lorakit-tiny.safetensors"

TEXT = dict(hidden_size=64, intermediate_size=256, num_attention_heads=1, num_hidden_layers=2)
VAE = dict(
    # 64 channels at full size, not 32: the decoder's last GroupNorm (32 groups) would otherwise
    # normalise each channel alone, wiping out absolute colour levels
    block_out_channels=[64, 32, 64],
    down_block_types=["DownEncoderBlock2D"] * 3,
    up_block_types=["UpDecoderBlock2D"] * 3,
    layers_per_block=1,
    sample_size=shapes.SIZE,
)
UNET = dict(
    block_out_channels=[64, 128],
    layers_per_block=1,
    sample_size=shapes.SIZE // 4,
    cross_attention_dim=TEXT["hidden_size"],
    attention_head_dim=8,
    down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
)


def log(*parts) -> None:
    print(time.strftime("%H:%M:%S"), *parts, flush=True)


def images_tensor(indices, seed: int, with_magenta: bool = False) -> torch.Tensor:
    """Pretraining pictures; `with_magenta`: the VAE's pictures, where one in six is magenta."""
    if with_magenta:
        colours = [*shapes.COLOURS, shapes.HELD_OUT_COLOUR]
        pictures = [shapes.picture(seed * 1_000_003 + int(i), colour=colours[int(i) % 6]) for i in indices]
    else:
        pictures = [shapes.training_pair(int(i), seed)[2] for i in indices]
    pixels = np.stack([np.asarray(shapes.draw(p)) for p in pictures])
    return torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    """Linear warm-up, then cosine down to a tenth of the peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def save_state(path: Path, **state) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


# -- stage 1: the VAE -------------------------------------------------------------------------


def train_vae(args, work: Path) -> AutoencoderKL:
    final = work / "vae.pt"
    torch.manual_seed(args.seed)
    vae = AutoencoderKL.from_config({**SD1.config("vae"), **VAE})
    if final.exists():
        vae.load_state_dict(torch.load(final, weights_only=True))
        log(f"VAE: loaded {final}")
        return vae.eval().requires_grad_(False)
    opt = torch.optim.AdamW(vae.parameters(), lr=args.vae_lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(args.seed + 1)
    start, partial = 0, work / "vae-state.pt"
    if partial.exists():
        state = torch.load(partial, weights_only=False)
        vae.load_state_dict(state["vae"])
        opt.load_state_dict(state["opt"])
        gen.set_state(state["gen"])
        start = state["step"]
        log(f"VAE: resumed at step {start}")
    vae.train()
    began = time.time()
    for step in range(start, args.vae_steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args.vae_steps, args.vae_lr, 50)
        x = images_tensor(range(step * args.vae_batch, (step + 1) * args.vae_batch), args.seed + 7, True)
        posterior = vae.encode(x).latent_dist
        z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=gen)
        y = vae.decode(z).sample
        rec = (y - x).abs().mean() + (y - x).pow(2).mean()
        kl = 0.5 * (posterior.mean.pow(2) + posterior.var - 1.0 - posterior.logvar).mean()
        loss = rec + args.vae_kl * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        if (step + 1) % 50 == 0 or step == start:
            rate = (step + 1 - start) / max(time.time() - began, 1e-6)
            log(
                f"VAE step {step + 1}/{args.vae_steps}: rec {rec.item():.4f} kl {kl.item():.3f} ({rate:.2f} steps/s)"
            )
        if (step + 1) % 200 == 0:
            save_state(
                partial, vae=vae.state_dict(), opt=opt.state_dict(), gen=gen.get_state(), step=step + 1
            )
    vae.eval().requires_grad_(False)
    normalise_latents(vae, args.seed)
    save_state(final, **vae.state_dict())
    log(
        f"VAE: {reconstruction_agreement(vae, args.seed):.1%} of reconstructions read as the same colour and shape"
    )
    return vae


@torch.no_grad()
def reconstruction_agreement(vae: AutoencoderKL, seed: int, count: int = 240) -> float:
    """The share of unseen pictures (magenta included) whose reconstruction the concept score
    reads as the same colour and shape as the original: the VAE's quality in the score's terms."""
    from lorakit.quickstart.score import read_image

    x = images_tensor(range(10**6, 10**6 + count), seed + 13, True)
    y = vae.decode(vae.encode(x).latent_dist.mean).sample.clamp(-1, 1)

    def pictures(t):
        return [((im.permute(1, 2, 0).numpy() + 1) * 127.5).round().astype(np.uint8) for im in t]

    same = 0
    for a, b in zip(pictures(x), pictures(y)):
        ra, rb = read_image(a), read_image(b)
        same += (ra.colour, ra.shape) == (rb.colour, rb.shape)
    return same / count


@torch.no_grad()
def normalise_latents(vae: AutoencoderKL, seed: int) -> None:
    """Shift and scale the latent space so `latents * scaling_factor` has zero mean and unit
    spread per channel. SD1's scaling factor is fixed (0.18215, read by every trainer and UI),
    so the VAE is changed instead: the encoder's last 1x1 convolution (quant_conv) gets the new
    mean and scale, and the decoder's first (post_quant_conv) undoes them exactly."""
    x = images_tensor(range(2048), seed=seed + 11)
    posterior = vae.encode(x).latent_dist
    mean = posterior.mean.mean(dim=(0, 2, 3))
    std = posterior.mean.std(dim=(0, 2, 3))
    scale = 1.0 / (std * vae.config.scaling_factor)
    c = mean.numel()
    q, p = vae.quant_conv, vae.post_quant_conv
    q.weight[:c] *= scale[:, None, None, None]
    q.bias[:c] = (q.bias[:c] - mean) * scale
    q.bias[c:] += 2 * torch.log(scale)  # log-variance follows the scale
    p.bias += p.weight[:, :, 0, 0] @ mean
    p.weight /= scale[None, :, None, None]
    check = vae.encode(x[:512]).latent_dist.mean * vae.config.scaling_factor
    log(f"VAE latents rescaled: mean {check.mean().item():+.3f}, std {check.std().item():.3f} (x0.18215)")


@torch.no_grad()
def encode_pool(vae: AutoencoderKL, args, work: Path) -> torch.Tensor:
    path = work / "latents.pt"
    if path.exists():
        latents = torch.load(path, weights_only=True)["latents"]
        if latents.shape[0] == args.pool:
            return latents
    chunks = []
    for start in range(0, args.pool, 256):
        x = images_tensor(range(start, min(args.pool, start + 256)), seed=args.seed)
        chunks.append(vae.encode(x).latent_dist.mean * vae.config.scaling_factor)
    latents = torch.cat(chunks)
    save_state(path, latents=latents)
    log(f"encoded {args.pool} pictures: latents {tuple(latents.shape)}")
    return latents


# -- stage 2: text encoder + U-Net ------------------------------------------------------------


def new_model(vae: AutoencoderKL, seed: int) -> StableDiffusionModel:
    torch.manual_seed(seed)
    text = CLIPTextModel(CLIPTextConfig(**{**SD1.config("text_encoder"), **TEXT}))
    unet = UNet2DConditionModel.from_config({**SD1.config("unet"), **UNET})
    return StableDiffusionModel(
        family=SD1,
        unet=unet,
        vae=vae,
        text_encoders=[text],
        tokenizers=[clip_tokenizer()],
        prediction_type="epsilon",
        prediction_source="file",
        resolution=shapes.SIZE,
        source="lorakit-tiny",
    )


def captions_for(indices, seed: int, epoch: int, dropout: float) -> list[str]:
    out = []
    for i in indices:
        rng = random.Random(f"{seed} {epoch} {int(i)}")
        if rng.random() < dropout:
            out.append("")
            continue
        p = shapes.picture(seed * 1_000_003 + int(i))
        out.append(shapes.caption(p, rng))
    return out


def train_unet(model: StableDiffusionModel, latents: torch.Tensor, args, work: Path) -> StableDiffusionModel:
    unet, text = model.unet, model.text_encoders[0]
    params = list(unet.parameters()) + list(text.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01, betas=(0.9, 0.99))
    ema = [p.detach().clone() for p in params]
    gen = torch.Generator().manual_seed(args.seed + 2)
    scheduler = model.noise_scheduler()
    # min-SNR-gamma for epsilon prediction, per timestep: the weighting `lorakit train` applies
    every_step = torch.arange(len(scheduler.alphas_cumprod))
    weight = snr_weight(LossOptions(min_snr_gamma=args.min_snr), scheduler, every_step, v_prediction=False)
    start, partial = 0, work / "unet-state.pt"
    if partial.exists():
        state = torch.load(partial, weights_only=False)
        unet.load_state_dict(state["unet"])
        text.load_state_dict(state["text"])
        opt.load_state_dict(state["opt"])
        for e, saved in zip(ema, state["ema"]):
            e.copy_(saved)
        gen.set_state(state["gen"])
        start = state["step"]
        log(f"U-Net: resumed at step {start}")
    unet.train().requires_grad_(True)
    text.train().requires_grad_(True)
    per_epoch = latents.shape[0] // args.batch
    began, losses = time.time(), []
    for step in range(start, args.unet_steps):
        epoch, offset = divmod(step, per_epoch)
        order = torch.randperm(
            latents.shape[0], generator=torch.Generator().manual_seed(args.seed * 977 + epoch)
        )
        index = order[offset * args.batch : (offset + 1) * args.batch]
        lr = lr_at(step, args.unet_steps, args.lr, args.warmup)
        for group in opt.param_groups:
            group["lr"] = lr
        x0 = latents[index]
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (x0.shape[0],), generator=gen)
        noisy = scheduler.add_noise(x0, noise, t)
        hidden, _ = encode(model, tokenize(model, captions_for(index, args.seed, epoch, 0.1)))
        pred = unet(noisy, t, hidden).sample
        loss = ((pred - noise).pow(2).mean(dim=(1, 2, 3)) * weight[t]).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        decay = min(args.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for e, p in zip(ema, params):
                e.lerp_(p.detach(), 1 - decay)
        losses.append(loss.item())
        if (step + 1) % 50 == 0 or step == start:
            rate = (step + 1 - start) / max(time.time() - began, 1e-6)
            left = (args.unet_steps - step - 1) / max(rate, 1e-9) / 60
            log(
                f"U-Net step {step + 1}/{args.unet_steps}: loss {np.mean(losses[-50:]):.4f} lr {lr:.2e} "
                f"({rate:.2f} steps/s, about {left:.0f} min left)"
            )
        if args.eval_every and (step + 1) % args.eval_every == 0 and step + 1 < args.unet_steps:
            quick_look(model, params, ema, step + 1)
        if (step + 1) % args.save_every == 0 or step + 1 == args.unet_steps:
            save_state(
                partial,
                unet=unet.state_dict(),
                text=text.state_dict(),
                opt=opt.state_dict(),
                ema=ema,
                gen=gen.get_state(),
                step=step + 1,
            )
    with torch.no_grad():
        for e, p in zip(ema, params):
            p.copy_(e)
    unet.eval().requires_grad_(False)
    text.eval().requires_grad_(False)
    return model


# -- evaluation -------------------------------------------------------------------------------


@torch.no_grad()
def quick_look(model: StableDiffusionModel, params, ema, step: int) -> None:
    """Progress in the terms that matter: the EMA weights draw 2 seeds of every pair."""
    saved = [p.detach().clone() for p in params]
    for p, e in zip(params, ema):
        p.copy_(e)
    model.unet.eval()
    model.text_encoders[0].eval()
    table = evaluate(model, seeds=2, steps=12, cfg=5.0)
    colour = np.mean([r["colour"] for r in table.values()])
    both = np.mean([r["colour_and_shape"] for r in table.values()])
    log(
        f"step {step}: EMA model, 2 seeds per pair: colour right {colour:.0%}, colour and shape right {both:.0%}"
    )
    for p, s in zip(params, saved):
        p.copy_(s)
    model.unet.train()
    model.text_encoders[0].train()


def evaluate(model: StableDiffusionModel, seeds: int, steps: int, cfg: float) -> dict:
    """For every (shape, colour) pair: the share of `seeds` pictures read as that colour, and
    as that colour and shape. Backgrounds cycle through white, black and gray."""
    from lorakit.quickstart.sample import generate
    from lorakit.quickstart.score import read_image

    backgrounds = list(shapes.BACKGROUNDS)
    table = {}
    for shape in shapes.SHAPES:
        for colour in shapes.COLOURS:
            prompts = [f"a {colour} {shape} on a {backgrounds[s % 3]} background" for s in range(seeds)]
            readings = [read_image(im) for im in generate(model, prompts, list(range(seeds)), steps, cfg)]
            table[f"{colour} {shape}"] = {
                "colour": sum(r.colour == colour for r in readings) / seeds,
                "colour_and_shape": sum(r.colour == colour and r.shape == shape for r in readings) / seeds,
                "magenta": sum(r.colour == "magenta" for r in readings) / seeds,
            }
    return table


def print_table(table: dict) -> None:
    log(f"{'prompt':<18} {'colour':>7} {'+shape':>7} {'magenta':>8}")
    for name, row in table.items():
        log(f"{name:<18} {row['colour']:>7.2f} {row['colour_and_shape']:>7.2f} {row['magenta']:>8.2f}")
    worst_c = min(r["colour"] for r in table.values())
    worst_s = min(r["colour_and_shape"] for r in table.values())
    log(f"worst pair: colour {worst_c:.2f}, colour and shape {worst_s:.2f}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the checkpoint to write")
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "tiny-pretrain", help="stage states")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for torch")
    parser.add_argument("--vae-steps", type=int, default=800)
    parser.add_argument("--vae-batch", type=int, default=32)
    parser.add_argument("--vae-lr", type=float, default=1e-3)
    parser.add_argument(
        "--vae-kl", type=float, default=1e-3, help="KL weight (keeps the latent space smooth)"
    )
    parser.add_argument("--pool", type=int, default=32768, help="pictures in the U-Net training set")
    parser.add_argument("--unet-steps", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--min-snr", type=float, default=5.0)
    parser.add_argument("--ema", type=float, default=0.998)
    parser.add_argument("--save-every", type=int, default=100)
    parser.add_argument(
        "--eval-every", type=int, default=500, help="a quick look at the EMA model (0: never)"
    )
    parser.add_argument("--eval-seeds", type=int, default=16)
    parser.add_argument("--eval-steps", type=int, default=12)
    parser.add_argument("--eval-cfg", type=float, default=5.0)
    parser.add_argument("--stop-after-vae", action="store_true", help="only train the VAE (to try settings)")
    parser.add_argument("--eval-only", action="store_true", help="measure the --out file; train nothing")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    if args.eval_only:
        return measure(args, minutes=None)
    began = time.time()
    vae = train_vae(args, args.work)
    if args.stop_after_vae:
        return 0
    latents = encode_pool(vae, args, args.work)
    model = train_unet(new_model(vae, args.seed), latents, args, args.work)
    model.metadata = {
        "lorakit.tiny.recipe": json.dumps(
            {k: str(v) for k, v in vars(args).items() if k not in ("out", "work")}
        ),
        "modelspec.description": "lorakit-tiny: a toy text-to-image model for the quickstart and tests; "
        "draws circles, squares and triangles in red, yellow, green, cyan and blue on white, black or gray.",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_single_file(model, args.out, precision="fp16", title="lorakit-tiny")
    minutes = (time.time() - began) / 60
    log(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB) after {minutes:.1f} min")
    return measure(args, minutes)


def measure(args, minutes: float | None) -> int:
    """Evaluate the written file, loaded the way users load checkpoints."""
    from lorakit.models.load import load_model

    loaded = load_model(args.out, dtype=torch.float32)
    table = evaluate(loaded, args.eval_seeds, args.eval_steps, args.eval_cfg)
    print_table(table)
    record = {"file": str(args.out), "minutes": minutes, "seeds": args.eval_seeds, "table": table}
    (args.work / "eval.json").write_text(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
