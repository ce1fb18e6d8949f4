"""Full-size checkpoint round trip: a random-weight SD1.5 (or SDXL) single file in fp16 is loaded
into diffusers components and saved back; every tensor must come back bit for bit.

    python benchmarks/checkpoint_roundtrip.py [--family sd1|sd2|sdxl] [--out DIR]

Prints a table (write, load, save times; file size; peak RSS) and writes a JSON result.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors import safe_open


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def compare(a: Path, b: Path) -> tuple[int, list[str]]:
    """Tensor by tensor, so two multi-GB files are never in memory at once."""
    bad = []
    with safe_open(str(a), "pt") as fa, safe_open(str(b), "pt") as fb:
        keys_a, keys_b = set(fa.keys()), set(fb.keys())
        bad += sorted(keys_a ^ keys_b)
        for key in sorted(keys_a & keys_b):
            x, y = fa.get_tensor(key), fb.get_tensor(key)
            if x.dtype != y.dtype or not torch.equal(x, y):
                bad.append(key)
        return len(keys_a), bad


def run(family: str, folder: Path) -> dict:
    from lorakit.models.load import load_model
    from lorakit.models.save import save_single_file
    from lorakit.models.tiny import write_checkpoint

    torch.manual_seed(0)
    source, target = folder / f"random-{family}.safetensors", folder / f"random-{family}-again.safetensors"
    t0 = time.perf_counter()
    write_checkpoint(source, family, size="full", dtype=torch.float16)
    t1 = time.perf_counter()
    model = load_model(source)
    t2 = time.perf_counter()
    save_single_file(model, target)
    t3 = time.perf_counter()
    del model
    count, bad = compare(source, target)
    return {
        "family": family,
        "tensors": count,
        "mismatched": bad,
        "file_gb": round(source.stat().st_size / 1024**3, 3),
        "write_s": round(t1 - t0, 1),
        "load_s": round(t2 - t1, 1),
        "save_s": round(t3 - t2, 1),
        "peak_rss_gb": round(peak_rss_gb(), 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--family", default="sd1", choices=["sd1", "sd2", "sdxl"])
    parser.add_argument("--out", default="benchmarks/out", help="Where the JSON result goes.")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="lorakit-bench-") as tmp:
        result = run(args.family, Path(tmp))
    print(
        f"{'family':<8}{'tensors':>9}{'size GB':>9}{'write s':>9}{'load s':>8}{'save s':>8}{'peak RSS GB':>13}  bit-exact"
    )
    print(
        f"{result['family']:<8}{result['tensors']:>9}{result['file_gb']:>9}{result['write_s']:>9}"
        f"{result['load_s']:>8}{result['save_s']:>8}{result['peak_rss_gb']:>13}  {not result['mismatched']}"
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"checkpoint_roundtrip_{args.family}.json").write_text(json.dumps(result, indent=2))
    return 0 if not result["mismatched"] else 1


if __name__ == "__main__":
    sys.exit(main())
