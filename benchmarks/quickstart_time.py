"""How long `lorakit quickstart` takes, end to end, and where the time goes.

Runs the quickstart in a fresh process per repeat (so the model load and imports count, as for
a user), with the given number of torch threads, and reads the phase times from its output.

    python benchmarks/quickstart_time.py [--repeats 1] [--threads 2] [--algo lora]

Prints a table and writes benchmarks/out/quickstart_time.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import sys, time, torch
torch.set_num_threads(int(sys.argv[2]))
marks = []
def say(text):
    marks.append((time.time(), text.splitlines()[0]))
    print(text, flush=True)
from lorakit.quickstart.run import run_quickstart
began = time.time()
result = run_quickstart(sys.argv[1], algorithm=sys.argv[3], say=say, quiet=True)
end = time.time()
import json
print("RESULT " + json.dumps({"began": began, "end": end, "marks": marks, "concept": result.concept}))
"""


def once(threads: int, algo: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        started = time.time()
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
        proc = subprocess.run(
            [sys.executable, "-c", CHILD, str(Path(tmp) / "qs"), str(threads), algo],
            capture_output=True,
            text=True,
            env=env,
        )
        wall = time.time() - started
    if proc.returncode:
        raise SystemExit(f"quickstart failed:\n{proc.stderr[-3000:]}")
    data = json.loads(next(line[7:] for line in proc.stdout.splitlines() if line.startswith("RESULT ")))
    marks = [m for m in data["marks"] if m[1][:1].isdigit()]  # the "N/4 ..." steps, not the summary
    phases = {}
    for (t0, name), (t1, _) in zip(marks, marks[1:] + [(data["end"], "end")]):
        phases[name.split(":")[0].split(",")[0]] = round(t1 - t0, 1)
    return {
        "wall_s": round(wall, 1),
        "in_process_s": round(data["end"] - data["began"], 1),
        "phases": phases,
        "concept": data["concept"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--algo", default="lora")
    args = parser.parse_args()
    runs = [once(args.threads, args.algo) for _ in range(args.repeats)]
    print(f"\nlorakit quickstart --algo {args.algo}, torch threads {args.threads}, {os.cpu_count()} CPUs")
    print(f"{'run':>3}  {'wall':>7}  {'in-process':>10}  phases (s)")
    for i, r in enumerate(runs, 1):
        phases = ", ".join(f"{k} {v}" for k, v in r["phases"].items())
        print(f"{i:>3}  {r['wall_s']:>6.1f}s  {r['in_process_s']:>9.1f}s  {phases}")
    print("concept check of the last run:", runs[-1]["concept"])
    out = ROOT / "benchmarks" / "out"
    out.mkdir(exist_ok=True)
    record = {
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "threads": args.threads,
        "algo": args.algo,
        "runs": runs,
        "date": time.strftime("%Y-%m-%d"),
    }
    (out / "quickstart_time.json").write_text(json.dumps(record, indent=1))
    print(f"wrote {out / 'quickstart_time.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
