"""lorakit against kohya-ss/sd-scripts itself, side by side on the same work.

Both trainers read one flat TOML (sd-scripts' `--config_file`, lorakit's `train CONFIG`) that
this script writes, on the same random-weight SD1.5 single file and the same 8 pictures in
`10_sks shape`. Runs are interleaved (A B A B A B) so that a changing machine load falls on both
alike. The clock is outside both trainers: every process gets a `sitecustomize` that hooks
`torch.optim`'s global optimizer-step hook and appends a monotonic timestamp per step to a file;
the launch time is taken here just before the process starts, and the peak RSS is the kernel's
(`wait4`) for the whole process, from its start.

    python benchmarks/vs_sd_scripts.py --sd-scripts /path/to/sd-scripts [--configs 256,bf16] [--runs 3]
    python benchmarks/vs_sd_scripts.py                 # no sd-scripts: the plain diffusers+peft loop

The sd-scripts checkout needs its own virtual environment (`.venv` inside it, or
`--sd-scripts-python`). On a CPU machine its `torchvision` import is served by a tiny CUDA-free
stand-in written here (the transforms it uses: Compose, ToTensor, Normalize, pil_to_tensor,
gaussian_blur), and the CLIP tokenizer comes from lorakit's shipped vocabulary through
`tokenizer_cache_dir`, so nothing is downloaded. Prints a table per config and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TIMED_FROM = 2  # s/step over steps 3..N: the first two carry one-time costs in both trainers

BASE = {
    "train_data_dir": None,  # filled in
    "resolution": "256",
    "caption_extension": ".txt",
    "network_module": "networks.lora",
    "network_dim": 32,
    "network_alpha": 16,
    "train_batch_size": 1,
    "optimizer_type": "AdamW",
    "learning_rate": 1e-4,
    "lr_scheduler": "constant",
    "cache_latents": True,
    "sdpa": True,
    "mixed_precision": "no",
    "save_precision": "fp16",
    "save_model_as": "safetensors",
    "max_data_loader_n_workers": 0,
    "seed": 42,
    "log_with": "tensorboard",
}

CONFIGS = {
    "256": {},
    "512": {"resolution": "512"},
    "locon": {"network_args": ["conv_dim=16", "conv_alpha=8"]},
    "unet_only": {"network_train_unet_only": True},
    "bf16": {"mixed_precision": "bf16"},
    # GPU configs (benchmarks/gpu.sh): keys starting with "_" are this script's, not the trainers'
    "gpu_sd15_fp16": {"resolution": "512", "train_batch_size": 4, "mixed_precision": "fp16", "_gpu": True},
    "gpu_sd15_bf16": {"resolution": "512", "train_batch_size": 4, "mixed_precision": "bf16", "_gpu": True},
    "gpu_sdxl_fp16": {
        "resolution": "1024", "mixed_precision": "fp16", "no_half_vae": True, "_model": "sdxl", "_gpu": True,
    },
    "gpu_sdxl_bf16": {"resolution": "1024", "mixed_precision": "bf16", "_model": "sdxl", "_gpu": True},
    "gpu_sdxl_12gb": {  # the 12 GB preset: checkpointing, cached text encoder outputs, Adafactor
        "resolution": "1024", "mixed_precision": "bf16", "gradient_checkpointing": True,
        "cache_text_encoder_outputs": True, "network_train_unet_only": True, "optimizer_type": "Adafactor",
        "optimizer_args": ["scale_parameter=False", "relative_step=False", "warmup_init=False"],
        "_model": "sdxl", "_gpu": True,
    },
}  # fmt: skip

DESCRIPTIONS = {
    "256": "256 px, fp32, LoRA dim 32/alpha 16 on U-Net + text encoder",
    "512": "512 px, fp32, LoRA dim 32/alpha 16 on U-Net + text encoder",
    "locon": "256 px, fp32, LoCon (conv_dim 16/alpha 8) + LoRA dim 32 on U-Net + text encoder",
    "unet_only": "256 px, fp32, LoRA dim 32/alpha 16 on the U-Net only",
    "bf16": "256 px, bf16 autocast (bf16 base weights), LoRA dim 32/alpha 16 on U-Net + text encoder",
    "gpu_sd15_fp16": "SD1.5 512 px batch 4, fp16 autocast, SDPA, LoRA dim 32 on U-Net + text encoder",
    "gpu_sd15_bf16": "SD1.5 512 px batch 4, bf16 autocast, SDPA, LoRA dim 32 on U-Net + text encoder",
    "gpu_sdxl_fp16": "SDXL 1024 px batch 1, fp16 autocast (fp32 VAE), SDPA, LoRA dim 32 on U-Net + both encoders",
    "gpu_sdxl_bf16": "SDXL 1024 px batch 1, bf16 autocast, SDPA, LoRA dim 32 on U-Net + both encoders",
    "gpu_sdxl_12gb": "SDXL 1024 px batch 1, the 12 GB preset: bf16, gradient checkpointing, cached text "
    "encoder outputs, U-Net only, Adafactor",
}

SITECUSTOMIZE = '''
"""Benchmark clock: a monotonic timestamp (and the CUDA memory peak so far, 0 on a CPU) per
optimizer step, appended to $LORAKIT_BENCH_STEPS.
Installed when torch.optim.optimizer is first imported, so it costs nothing before."""
import importlib.machinery
import os
import sys
import time

_LOG = os.environ.get("LORAKIT_BENCH_STEPS")


class _StepClock:
    def find_spec(self, name, path=None, target=None):
        if name != "torch.optim.optimizer":
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            out = open(_LOG, "a", buffering=1)

            def stamp(*_):
                import torch

                cuda = torch.cuda.max_memory_allocated() if torch.cuda.is_initialized() else 0
                out.write(f"{time.monotonic()!r} {cuda}\\n")

            module.register_optimizer_step_post_hook(stamp)

        spec.loader.exec_module = exec_module
        return spec


if _LOG:
    sys.meta_path.insert(0, _StepClock())
'''

TORCHVISION_INIT = '''"""CUDA-free stand-in for the few torchvision pieces sd-scripts imports (benchmark only)."""
from . import transforms  # noqa: F401
__version__ = "0.0-standin"
'''

TRANSFORMS_INIT = """
import numpy as np
import torch

from . import functional  # noqa: F401


class Compose:
    def __init__(self, transforms):
        self.transforms = transforms

    def __call__(self, x):
        for t in self.transforms:
            x = t(x)
        return x


class ToTensor:
    def __call__(self, pic):
        a = np.asarray(pic)
        if a.ndim == 2:
            a = a[:, :, None]
        t = torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)
        return t.float().div(255) if t.dtype == torch.uint8 else t.float()


class Normalize:
    def __init__(self, mean, std):
        self.mean, self.std = mean, std

    def __call__(self, t):
        mean = torch.as_tensor(self.mean, dtype=t.dtype).reshape(-1, 1, 1)
        std = torch.as_tensor(self.std, dtype=t.dtype).reshape(-1, 1, 1)
        return (t - mean) / std
"""

FUNCTIONAL = """
import numpy as np
import torch
import torch.nn.functional as F


def pil_to_tensor(pic):
    a = np.array(pic)
    if a.ndim == 2:
        a = a[:, :, None]
    return torch.from_numpy(a).permute(2, 0, 1).contiguous()


def gaussian_blur(x, kernel_size, sigma=None):
    k = kernel_size[0] if isinstance(kernel_size, (list, tuple)) else kernel_size
    s = sigma[0] if isinstance(sigma, (list, tuple)) else (sigma or 0.3 * ((k - 1) * 0.5 - 1) + 0.8)
    r = torch.arange(k, dtype=torch.float32) - (k - 1) / 2
    g = torch.exp(-(r**2) / (2 * s**2))
    g = (g / g.sum()).to(x.dtype)
    c = x.shape[-3]
    y = x.reshape(-1, c, *x.shape[-2:])
    y = F.pad(y, (k // 2,) * 4, mode="reflect")
    y = F.conv2d(y, g.reshape(1, 1, 1, k).expand(c, 1, 1, k), groups=c)
    y = F.conv2d(y, g.reshape(1, 1, k, 1).expand(c, 1, k, 1), groups=c)
    return y.reshape(x.shape)
"""


# -- inputs ------------------------------------------------------------------------------------


def make_model(work: Path, family: str = "sd1") -> Path:
    """The random-weight SD1.5 (2 GB) or SDXL (6.9 GB) single file in fp16, made once and reused."""
    path = work / ("sdxl-random.safetensors" if family == "sdxl" else "sd15-random.safetensors")
    if not path.exists():
        import torch

        from lorakit.models.tiny import write_checkpoint

        write_checkpoint(path, family, size="full", dtype=torch.float16)
    return path


def model_flops(family: str, batch: int, size: int) -> float:
    """Model FLOPs of one training step: 3x the U-Net's forward (the usual convention: forward +
    backward), counted by torch's FLOP counter on the meta device, so nothing is computed."""
    import torch
    from diffusers import UNet2DConditionModel
    from torch.utils.flop_counter import FlopCounterMode

    from lorakit.models.families import FAMILIES

    fam = FAMILIES[family]
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(fam.config("unet"))
        latents = torch.zeros(batch, 4, size // 8, size // 8)
        hidden = torch.zeros(batch, 77, unet.config.cross_attention_dim)
        added = None
        if fam.is_xl:
            added = {"text_embeds": torch.zeros(batch, 1280), "time_ids": torch.zeros(batch, 6)}
        with FlopCounterMode(display=False) as counter:
            unet(latents, torch.zeros(batch, dtype=torch.long), hidden, added_cond_kwargs=added)
    return 3.0 * counter.get_total_flops()


def make_pictures(folder: Path, size: int, count: int = 8) -> Path:
    """`count` pictures of smooth random colour fields in `10_sks shape`, captioned "sks shape"."""
    import numpy as np
    from PIL import Image

    images = folder / "10_sks shape"
    if len(list(images.glob("*.png"))) == count:
        return folder
    images.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        coarse = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        Image.fromarray(coarse).resize((size, size), Image.BICUBIC).save(images / f"{i:02d}.png")
        (images / f"{i:02d}.txt").write_text("sks shape")
    return folder


def make_tokenizer_cache(folder: Path) -> Path:
    """sd-scripts' tokenizer_cache_dir layout, from lorakit's shipped CLIP vocabulary."""
    target = folder / "openai_clip-vit-large-patch14"
    if not (target / "merges.txt").exists():
        from lorakit.models.tokenizers import write_tokenizer

        write_tokenizer(target)
        # older transformers (sd-scripts pins 4.x) read the slow tokenizer's two files
        bpe = json.loads((target / "tokenizer.json").read_text(encoding="utf-8"))["model"]
        merges = [m if isinstance(m, str) else " ".join(m) for m in bpe["merges"]]
        (target / "vocab.json").write_text(json.dumps(bpe["vocab"], ensure_ascii=False), encoding="utf-8")
        (target / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    return folder


def write_harness(folder: Path, torchvision_stand_in: bool) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(SITECUSTOMIZE)
    if torchvision_stand_in:
        transforms = folder / "torchvision" / "transforms"
        transforms.mkdir(parents=True, exist_ok=True)
        (folder / "torchvision" / "__init__.py").write_text(TORCHVISION_INIT)
        (transforms / "__init__.py").write_text(TRANSFORMS_INIT)
        (transforms / "functional.py").write_text(FUNCTIONAL)
    return folder


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(str(value))


def write_config(path: Path, values: dict) -> Path:
    path.write_text("".join(f"{k} = {toml_value(v)}\n" for k, v in values.items()))
    return path


# -- one run -----------------------------------------------------------------------------------


def load_average() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def run_once(command: list[str], env: dict, cwd: Path, steps_file: Path, log: Path) -> dict:
    """Start `command`, wait for it, and read its step clock and peak RSS."""
    steps_file.unlink(missing_ok=True)
    env = {**env, "LORAKIT_BENCH_STEPS": str(steps_file)}
    load_before = load_average()
    with open(log, "wb") as out:
        launched = time.monotonic()
        process = subprocess.Popen(command, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
        ended = time.monotonic()
    process.returncode = os.waitstatus_to_exitcode(status)
    lines = [line.split() for line in steps_file.read_text().splitlines()] if steps_file.exists() else []
    stamps = [float(line[0]) for line in lines if line]
    cuda_peak = max((int(line[1]) for line in lines if len(line) > 1), default=0)
    result = {
        "rc": process.returncode,
        "steps": len(stamps),
        "peak_rss_gb": usage.ru_maxrss / 1024**2,
        "wall_s": ended - launched,
        "load_before": load_before,
        "load_after": load_average(),
    }
    if cuda_peak:
        result["peak_cuda_gb"] = cuda_peak / 1024**3
    if stamps:
        result["first_step_s"] = stamps[0] - launched
    if len(stamps) > TIMED_FROM + 1:
        result["s_per_step"] = (stamps[-1] - stamps[TIMED_FROM - 1]) / (len(stamps) - TIMED_FROM)
    return result


def trainer_commands(args, config: Path, xl: bool = False) -> dict[str, tuple[list[str], Path]]:
    lorakit = [sys.executable, "-m", "lorakit.cli.main", "train", str(config)]
    commands = {"lorakit": (lorakit, Path.cwd())}
    if args.sd_scripts:
        checkout = Path(args.sd_scripts).resolve()
        python = args.sd_scripts_python or str(checkout / ".venv" / "bin" / "python")
        commands["sd-scripts"] = (
            [
                python,
                str(checkout / ("sdxl_train_network.py" if xl else "train_network.py")),
                "--config_file",
                str(config),
            ],
            checkout,
        )
    else:
        reference = [sys.executable, str(HERE / "train_step_speed.py"), "--child-toml", str(config)]
        commands["diffusers+peft"] = (reference, Path.cwd())
    return commands


def child_env(harness: Path, stand_in: Path | None) -> dict:
    env = dict(os.environ)
    paths = [str(harness)] + ([str(stand_in)] if stand_in else [])
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env.update(PYTHONPATH=os.pathsep.join(paths), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def needs_stand_in(python: str) -> bool:
    done = subprocess.run([python, "-c", "import torchvision.transforms"], capture_output=True)
    return done.returncode != 0


def bench_config(name: str, args, work: Path, model: Path | None, envs: dict) -> dict:
    values = {**BASE, **CONFIGS[name]}
    family = values.pop("_model", "sd1")
    gpu = values.pop("_gpu", False)
    model = model or make_model(work, family)
    size = int(values["resolution"])
    run_dir = work / f"config-{name}"
    values.update(
        pretrained_model_name_or_path=str(model),
        train_data_dir=str(make_pictures(work / f"pictures-{size}", size)),
        max_train_steps=args.steps,
        output_dir=str(run_dir / "out"),
        output_name="bench",
        logging_dir=str(run_dir / "logs"),
        tokenizer_cache_dir=str(make_tokenizer_cache(work / "tokenizers")),
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    config = write_config(run_dir / "config.toml", values)
    commands = trainer_commands(args, config, xl=family == "sdxl")
    if gpu and not args.sd_scripts:  # the diffusers+peft loop is SD1.5 on a CPU only: lorakit alone
        commands = {"lorakit": commands["lorakit"]}
    runs: dict[str, list[dict]] = {trainer: [] for trainer in commands}
    for round_ in range(args.runs):
        for trainer, (command, cwd) in commands.items():  # A B, A B, ...
            log = run_dir / f"{trainer}-{round_}.log"
            clear_outputs(run_dir / "out")
            result = run_once(command, envs[trainer], cwd, run_dir / "steps.txt", log)
            runs[trainer].append(result)
            shown = {k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()}
            print(f"  [{name}] {trainer} run {round_ + 1}: {shown}", flush=True)
            if result["rc"] != 0 or result["steps"] < args.steps:
                print(log.read_text(errors="replace")[-3000:], file=sys.stderr)
                raise SystemExit(f"{trainer} failed on config {name}: see {log}")
    result = {"config": name, "description": DESCRIPTIONS[name], "runs": runs, "summary": summarise(runs)}
    if args.peak_tflops:  # model-FLOP utilisation, from the median step time
        flops = model_flops(family, values["train_batch_size"], size)
        result["model_tflops_per_step"] = flops / 1e12
        for trainer in runs:
            result["summary"][trainer]["mfu"] = (
                flops / result["summary"][trainer]["s_per_step"] / (args.peak_tflops * 1e12)
            )
    return result


def clear_outputs(folder: Path) -> None:
    """Each run starts from an empty output folder (lorakit refuses to overwrite a finished run)."""
    import shutil

    shutil.rmtree(folder, ignore_errors=True)


def summarise(runs: dict[str, list[dict]]) -> dict:
    summary = {}
    for trainer, results in runs.items():
        summary[trainer] = {
            key: statistics.median(r[key] for r in results)
            for key in ("s_per_step", "first_step_s", "peak_rss_gb")
        }
        if all("peak_cuda_gb" in r for r in results):
            summary[trainer]["peak_cuda_gb"] = statistics.median(r["peak_cuda_gb"] for r in results)
        summary[trainer]["load"] = [
            min(r["load_before"] for r in results),
            max(r["load_after"] for r in results),
        ]
    other = next((t for t in runs if t != "lorakit"), None)
    if other is None:
        return summary
    summary["ratio"] = {
        key: summary["lorakit"][key] / summary[other][key]
        for key in ("s_per_step", "first_step_s", "peak_rss_gb")
    }
    return summary


def table(result: dict, steps: int) -> str:
    """A markdown table: a column per trainer (the other one first), and their ratio."""
    s = result["summary"]
    trainers = sorted(result["runs"], key=lambda t: t == "lorakit")
    pair = len(trainers) == 2
    runs = len(result["runs"]["lorakit"])

    def row(label: str, key: str, fmt: str, invert: bool = False) -> str | None:
        if not all(key in s[t] for t in trainers):
            return None
        cells = [fmt.format(1 / s[t][key] if invert else s[t][key]) for t in trainers]
        ratio = ""
        if pair:
            a, b = (s[t][key] for t in trainers)
            ratio = f"{(a / b if invert else b / a):.2f}"
        return f"| {label} | " + " | ".join(cells) + (f" | {ratio} |" if pair else " |")

    rows = [
        row(f"s/step (median of {runs} runs, steps {TIMED_FROM + 1}-{steps})", "s_per_step", "{:.2f}"),
        row("it/s", "s_per_step", "{:.3g}", invert=True),
        row("launch -> first optimizer step", "first_step_s", "{:.1f} s"),
        row("peak RSS", "peak_rss_gb", "{:.2f} GB"),
        row("peak CUDA memory (allocated)", "peak_cuda_gb", "{:.2f} GB"),
        row("model-FLOP utilisation", "mfu", "{:.1%}"),
    ]
    load = f"{min(s[t]['load'][0] for t in trainers):.2f}-{max(s[t]['load'][1] for t in trainers):.2f}"
    return "\n".join(
        [
            f"config {result['config']}: {result['description']}",
            "| | " + " | ".join(trainers) + (" | ratio (lorakit / other) |" if pair else " |"),
            "|---|" + "---|" * (len(trainers) + pair),
            *(r for r in rows if r),
            f"load average (1 min) during the runs: {load}",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sd-scripts", help="Path to a kohya-ss/sd-scripts checkout (with its own .venv).")
    parser.add_argument(
        "--sd-scripts-python",
        help="The python of sd-scripts' environment (default CHECKOUT/.venv/bin/python).",
    )
    parser.add_argument(
        "--configs", default="256,512,locon,unet_only,bf16", help=f"Comma-separated, of {', '.join(CONFIGS)}."
    )
    parser.add_argument("--runs", type=int, default=3, help="Runs per trainer and config (interleaved).")
    parser.add_argument("--steps", type=int, default=10, help="Optimizer steps per run.")
    parser.add_argument(
        "--work", default="benchmarks/out/vs_sd_scripts", help="Model, pictures, configs and logs."
    )
    parser.add_argument("--model", help="An SD1.5 single file to use instead of the random one made here.")
    parser.add_argument(
        "--json", default=None, help="Where to write the results (default WORK/results.json)."
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="OMP_NUM_THREADS for both trainers (default: torch's)."
    )
    parser.add_argument(
        "--peak-tflops",
        type=float,
        default=None,
        help="The device's dense fp16/bf16 peak, for the MFU column.",
    )
    args = parser.parse_args(argv)

    names = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        parser.error(f"unknown config(s) {unknown}; choose from {', '.join(CONFIGS)}")
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    model = Path(args.model).resolve() if args.model else None  # else made per family
    harness = write_harness(work / "harness", torchvision_stand_in=False)
    envs = {"lorakit": child_env(harness, None), "diffusers+peft": child_env(harness, None)}
    header = {"machine": machine(), "steps": args.steps, "runs": args.runs, "model": str(model or "random")}
    if args.sd_scripts:
        checkout = Path(args.sd_scripts).resolve()
        python = args.sd_scripts_python or str(checkout / ".venv" / "bin" / "python")
        stand_in = write_harness(work / "torchvision-stand-in", True) if needs_stand_in(python) else None
        envs["sd-scripts"] = child_env(harness, stand_in)
        header["sd_scripts_commit"] = subprocess.run(
            ["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
        header["torchvision_stand_in"] = stand_in is not None
    if args.threads:
        for env in envs.values():
            env["OMP_NUM_THREADS"] = str(args.threads)
    print(json.dumps(header), flush=True)
    results = []
    for name in names:
        result = bench_config(name, args, work, model, envs)
        results.append(result)
        print(table(result, args.steps), flush=True)
    out = Path(args.json) if args.json else work / "results.json"
    out.write_text(json.dumps({**header, "results": results}, indent=2))
    print(f"results: {out}")
    return 0


def machine() -> str:
    cores = os.cpu_count()
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "CPU",
    )
    return f"{model}, {cores} cores"


if __name__ == "__main__":
    sys.exit(main())
