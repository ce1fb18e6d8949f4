"""Merging a LoRA into a full-size SDXL checkpoint in little memory.

    python benchmarks/merge_sdxl.py [--dim 32] [--tmp DIR] [--out DIR] [--keep]

Writes a random-weight full-size SDXL checkpoint in fp16 (about 7 GB, in a temporary folder,
deleted afterwards unless --keep) and a random dim-32 LoRA on every default target of the
U-Net and both text encoders; then runs `merge_into_checkpoint` in a fresh process, so the peak
RSS reported is the merge's own (goal: well under 8 GB). A few modules, among them fused
OpenCLIP q/k/v rows, are checked against base + delta computed here. Prints a table and writes
a JSON result.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def write_random_sdxl(path: Path) -> int:
    """The single-file layout of a full SDXL (keys and shapes from the real classes on the meta
    device, mapped by lorakit's key maps), filled with N(0, 0.02) fp16 values one tensor at a
    time: making the 7 GB input costs no more memory than merging it."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from lorakit.models.families import SDXL
    from lorakit.models.model import StableDiffusionModel
    from lorakit.models.save import original_state, single_file_metadata
    from lorakit.tools.streaming import safetensors_writer

    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(SDXL.config("unet"))
        vae = AutoencoderKL.from_config(SDXL.config("vae"))
        te1 = CLIPTextModel(CLIPTextConfig(**SDXL.config("text_encoder")))
        te2 = CLIPTextModelWithProjection(CLIPTextConfig(**SDXL.config("text_encoder_2")))
    model = StableDiffusionModel(SDXL, unet, vae, [te1, te2], [], resolution=1024, source="random full sdxl")
    state = original_state(model)
    layout = [
        (k, torch.float16 if v.is_floating_point() else v.dtype, tuple(v.shape)) for k, v in state.items()
    ]
    gen = torch.Generator().manual_seed(0)
    with safetensors_writer(path, layout, single_file_metadata(model, "random-sdxl")) as writer:
        for key, dtype, shape in layout:
            if dtype.is_floating_point:
                value = (torch.randn(shape, generator=gen) * 0.02).to(dtype)
            else:
                value = (
                    state[key].to("cpu")
                    if state[key].device.type != "meta"
                    else torch.zeros(shape, dtype=dtype)
                )
            writer.write(key, value)
    return len(layout)


def write_random_lora(path: Path, dim: int) -> int:
    from lorakit.networks.file import save_network_file
    from lorakit.networks.naming import full_size_index

    gen = torch.Generator().manual_seed(1)
    tensors = {}
    layers = full_size_index("sdxl").default_targets()
    for layer in layers:
        out_dim, in_dim = layer.weight_shape[:2]
        tensors[f"{layer.name}.lora_down.weight"] = torch.randn(dim, in_dim, generator=gen) / in_dim**0.5
        tensors[f"{layer.name}.lora_up.weight"] = torch.randn(out_dim, dim, generator=gen) * 0.01
        tensors[f"{layer.name}.alpha"] = torch.tensor(dim / 2)
    meta = {
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(dim),
        "ss_base_model_version": "sdxl_base_v1-0",
    }
    save_network_file(path, tensors, meta, "fp16")
    return len(layers)


def merge_in_fresh_process(base: Path, lora: Path, out: Path) -> dict:
    """Runs the merge alone in a child process; returns its time and peak RSS."""
    code = (
        "import json, resource, sys, time\n"
        "from lorakit.tools import merge_into_checkpoint\n"
        "t = time.perf_counter()\n"
        "r = merge_into_checkpoint(sys.argv[1], [(sys.argv[2], 0.8)], sys.argv[3], device='cpu')\n"
        "print(json.dumps({'seconds': time.perf_counter() - t, 'tensors_changed': r.tensors_changed,"
        " 'peak_rss_gb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(base), str(lora), str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"merge failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def spot_check(base: Path, lora: Path, out: Path) -> float:
    """Largest |merged − (base + 0.8·ΔW)| over a few layers, in fp16 units of the result."""
    from lorakit.models.ldm.common import to_diffusers
    from lorakit.networks.reading import load_network
    from lorakit.tools.checkpoint import CheckpointWeights
    from lorakit.tools.streaming import TensorReader

    source = CheckpointWeights(base)
    merged = TensorReader(out)
    net = load_network(lora, model=source.model)
    names = [n for n in net.modules if "te2" in n and "q_proj" in n][:1] + [
        n for n in net.modules if "v_proj" in n
    ][:1]
    names += [n for n in net.modules if n.startswith("lora_unet_") and "ff_net_0_proj" in n][:2]
    worst = 0.0
    for name in names:
        layer = net.layers[name]
        key, op = source.key(layer)
        want = source.weight(layer).float() + 0.8 * net.modules[name].delta(layer.weight_shape)
        got = to_diffusers(merged[key], op).float()
        worst = max(worst, float((got - want.half().float()).abs().max()))
    return worst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument(
        "--tmp", default=None, help="Folder for the ~14 GB of temporary files (default: the system's)."
    )
    parser.add_argument("--out", default="benchmarks/out", help="Where the JSON result goes.")
    parser.add_argument(
        "--keep", action="store_true", help="Keep the checkpoints (printed) instead of deleting them."
    )
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="lorakit-merge-bench-", dir=args.tmp))
    try:
        base, lora, out = (
            folder / "sdxl.safetensors",
            folder / "lora.safetensors",
            folder / "merged.safetensors",
        )
        t0 = time.perf_counter()
        tensors = write_random_sdxl(base)
        t1 = time.perf_counter()
        modules = write_random_lora(lora, args.dim)
        merge = merge_in_fresh_process(base, lora, out)
        error = spot_check(base, lora, out)
        result = {
            "family": "sdxl",
            "checkpoint_gb": round(base.stat().st_size / 1024**3, 2),
            "tensors": tensors,
            "lora_dim": args.dim,
            "lora_modules": modules,
            "tensors_changed": merge["tensors_changed"],
            "write_checkpoint_s": round(t1 - t0, 1),
            "merge_s": round(merge["seconds"], 1),
            "merge_peak_rss_gb": round(merge["peak_rss_gb"], 2),
            "setup_peak_rss_gb": round(peak_rss_gb(), 2),
            "spot_check_max_abs_error": error,
        }
    finally:
        if args.keep:
            print(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)
    print(
        f"{'file GB':>8}{'tensors':>9}{'modules':>9}{'changed':>9}{'merge s':>9}{'peak RSS GB':>13}{'max err':>10}"
    )
    print(
        f"{result['checkpoint_gb']:>8}{result['tensors']:>9}{result['lora_modules']:>9}{result['tensors_changed']:>9}"
        f"{result['merge_s']:>9}{result['merge_peak_rss_gb']:>13}{result['spot_check_max_abs_error']:>10.2g}"
    )
    target = Path(args.out)
    target.mkdir(parents=True, exist_ok=True)
    (target / "merge_sdxl.json").write_text(json.dumps(result, indent=2))
    return 0 if result["merge_peak_rss_gb"] < 8 and result["spot_check_max_abs_error"] < 1e-2 else 1


if __name__ == "__main__":
    sys.exit(main())
