"""The long fault suite: what the most trusted trainers are tested with, on lorakit's real runs.

    python benchmarks/faults.py [--trials 30] [--json benchmarks/out/faults.json]

- kill -9 at random moments (from start-up to the last save) x --trials, on two configs (cached
  latents; no cache with flips, shuffled tags, a loader worker and gradient accumulation), a third
  of them killed a second time while resuming; then `--resume auto` until the run ends;
- kill -9 at each named fault point (mid-step, while a network file, a state or run.json is
  renamed into place);
- a full disk (a real 8 MB tmpfs when this runs as root and may mount one; else a file-size
  limit that fails writes the same way);
- two runs into one folder, a planted pickle in a state, the bad-value table.

Each killed run must end with the weights of the uninterrupted run, and no folder may hold a
half-written temporary file, a file that does not load, or a run.json whose file list is wrong.
Prints a tally, writes JSON; the figures go into benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent / "tests" / "reliability"), str(HERE.parent / "tests")]

from faultkit import (  # noqa: E402
    CONFIGS,
    command,
    damage,
    environment,
    finish,
    run,
    run_killed_after,
    same_weights,
    write_config,
)

POINTS = ["setup", "step@3", "step@9", "rename:f-step*.safetensors@2", "rename:f-step*-state@3",
          "rename:f-000001.safetensors", "rename:run.json@5", "rename:f-state"]  # fmt: skip


def reference(root: Path, kind: str) -> tuple[Path, float]:
    config = write_config(root / "whole", kind)
    began = time.time()
    result = run(config)
    if result.returncode:
        raise SystemExit(f"the uninterrupted {kind} run failed:\n{result.stderr[-3000:]}")
    return root / "whole" / "out" / "f.safetensors", time.time() - began


def judge(folder: Path, final: Path, result) -> dict:
    harm = damage(folder / "out")
    ok = (
        result is not None
        and result.returncode == 0
        and same_weights(folder / "out" / "f.safetensors", final)
    )
    return {
        "exact": bool(ok),
        **{k: len(v) for k, v in harm.items()},
        "details": harm if any(harm.values()) else {},
    }


def random_trial(root: Path, kind: str, final: Path, seconds: float, rng: random.Random, index: int) -> dict:
    folder = root / f"trial-{kind}-{index:03d}"
    config = write_config(folder, kind)
    at = rng.uniform(0.3, seconds)
    code = run_killed_after(config, at)
    second = None
    if code == -9 and rng.random() < 1 / 3:  # killed again while resuming
        second = rng.uniform(0.3, seconds)
        has_state = any((folder / "out").glob("f*-state"))
        run_killed_after(config, second, *(["--resume", "auto"] if has_state else ["--overwrite"]))
    result = finish(config) if code != 0 else None
    if code == 0:  # it finished before the kill
        result = subprocess.CompletedProcess([], 0)
    outcome = judge(folder, final, result)
    shutil.rmtree(folder, ignore_errors=True) if outcome["exact"] and not outcome["details"] else None
    return {
        "kind": kind,
        "kill_at": round(at, 2),
        "second_kill_at": second and round(second, 2),
        "killed": code == -9,
        **outcome,
    }


def point_trial(root: Path, kind: str, final: Path, point: str) -> dict:
    folder = root / f"point-{kind}-{point.replace(':', '_').replace('*', 'x').replace('@', '-')}"
    config = write_config(folder, kind)
    killed = run(config, fault=point)
    result = finish(config)
    return {"kind": kind, "point": point, "killed": killed.returncode == -9, **judge(folder, final, result)}


def full_disk(root: Path) -> dict:
    """A run whose output folder fills up: a message, run.json 'failed', nothing broken."""
    folder = root / "disk"
    out = folder / "out"
    out.mkdir(parents=True)
    mounted = False
    if os.geteuid() == 0 and shutil.which("mount"):
        mounted = (
            subprocess.run(
                ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(out)], capture_output=True
            ).returncode
            == 0
        )
    config = write_config(folder, "cached", network_dim=48, network_alpha=48)
    try:
        if mounted:
            result = run(config)
            how = "tmpfs of 8 MB"
        else:
            script = (
                "import resource, signal, sys\nsignal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
                "resource.setrlimit(resource.RLIMIT_FSIZE, (7000000, 7000000))\n"
                "from lorakit.cli.main import main\nsys.exit(main(['train', sys.argv[1], '--quiet']))\n"
            )
            result = subprocess.run(
                [sys.executable, "-c", script, str(config)], env=environment(), capture_output=True, text=True
            )
            how = "file-size limit of 7 MB (no tmpfs could be mounted)"
        record = json.loads((out / "run.json").read_text()) if (out / "run.json").exists() else {}
        harm = damage(out)
        return {
            "how": how,
            "exit": result.returncode,
            "message": next((line for line in result.stderr.splitlines() if line.startswith("error:")), ""),
            "traceback": "Traceback" in result.stderr,
            "status": record.get("status"),
            "leftovers": len(harm["leftovers"]),
            "unreadable": len(harm["unreadable"]),
        }
    finally:
        if mounted:
            subprocess.run(["umount", str(out)], capture_output=True)


def two_runs(root: Path) -> dict:
    folder = root / "two"
    config = write_config(folder, "cached", epochs=6)
    first = subprocess.Popen(
        command(config), env=environment(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    time.sleep(8)  # the first has taken the folder
    second = run(config)
    first_err = first.communicate(timeout=600)[1]
    return {
        "first_exit": first.returncode,
        "second_exit": second.returncode,
        "second_message": next(
            (line for line in second.stderr.splitlines() if line.startswith("error:")), ""
        ),
        "first_ok": first.returncode == 0 and "Traceback" not in first_err,
    }


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def planted_pickle(root: Path) -> dict:
    folder = root / "pickle"
    config = write_config(folder, "cached", epochs=1)
    run(config)
    marker = folder / "code-ran"
    (folder / "out" / "f-state" / "optimizer.pt").write_bytes(pickle.dumps(_Payload(str(marker))))
    result = run(config, "--resume", str(folder / "out" / "f-state"))
    return {
        "exit": result.returncode,
        "code_ran": marker.exists(),
        "refused": "pickle files" in result.stderr,
    }


def bad_values(root: Path) -> dict:
    from test_bad_values import BAD_VALUES

    config = write_config(root / "values", "cached", epochs=1)
    rows = []
    for option, value, expected in BAD_VALUES:
        result = subprocess.run(
            [sys.executable, "-m", "lorakit.cli.main", "train", str(config), f"--{option}={value}"],
            env=environment(), capture_output=True, text=True, cwd=config.parent,
        )  # fmt: skip
        first = (result.stderr.splitlines() or [""])[0]
        rows.append(
            {
                "option": option,
                "value": value,
                "exit": result.returncode,
                "traceback": "Traceback" in result.stderr,
                "matches": expected in first,
            }
        )
    return {
        "rows": len(rows),
        "clear": sum(r["exit"] == 2 and not r["traceback"] and r["matches"] for r in rows),
        "table": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=30, help="random kill trials per config")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", default=str(HERE / "out" / "faults.json"))
    parser.add_argument("--keep", action="store_true", help="keep the trial folders")
    parser.add_argument(
        "--configs", default=",".join(CONFIGS), help=f"which kill configs, comma-separated (default {','.join(CONFIGS)})"
    )
    args = parser.parse_args()
    kinds = [k for k in args.configs.split(",") if k]
    unknown = [k for k in kinds if k not in CONFIGS]
    if unknown:
        parser.error(f"unknown config {unknown[0]!r}: choose from {', '.join(CONFIGS)}")
    rng = random.Random(args.seed)
    root = Path(tempfile.mkdtemp(prefix="lorakit-faults-"))
    began = time.time()
    report: dict = {
        "machine": f"{platform.node()} ({os.cpu_count()} cores)",
        "trials_per_config": args.trials,
        "configs": {},
    }
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    for kind in kinds:
        final, seconds = reference(root / kind, kind)
        trials = []
        for i in range(args.trials):
            trials.append(random_trial(root / kind, kind, final, seconds, rng, i))
            print(f"{kind} trial {i + 1}/{args.trials}: exact {trials[-1]['exact']}", flush=True)
        points = [point_trial(root / kind, kind, final, p) for p in POINTS]
        report["configs"][kind] = {"reference_seconds": round(seconds, 1), "random": trials, "points": points}
        out.write_text(json.dumps(report, indent=2))  # what is done so far, should the run be cut short
        print(f"{kind}: {sum(t['exact'] for t in trials)}/{len(trials)} random kills and "
              f"{sum(p['exact'] for p in points)}/{len(points)} fault points resumed exactly", flush=True)  # fmt: skip
    report["full_disk"] = full_disk(root)
    report["two_runs"] = two_runs(root)
    report["planted_pickle"] = planted_pickle(root)
    report["bad_values"] = bad_values(root)
    report["seconds"] = round(time.time() - began)
    print_tally(report)
    out.write_text(json.dumps(report, indent=2))
    print(f"\nJSON: {args.json}")
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)


def print_tally(report: dict) -> None:
    print(
        "\n| config | trials | killed | killed twice | resumed exactly | truncated/unreadable | leftovers | run.json list wrong |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for kind, data in report["configs"].items():
        rows = data["random"] + data["points"]
        print(
            f"| {kind} | {len(rows)} | {sum(r['killed'] for r in rows)} | {sum(bool(r.get('second_kill_at')) for r in rows)} "
            f"| {sum(r['exact'] for r in rows)} | {sum(r['unreadable'] for r in rows)} | {sum(r['leftovers'] for r in rows)} "
            f"| {sum(r['listed_wrong'] for r in rows)} |"
        )
    disk, two, pickled, values = (
        report["full_disk"],
        report["two_runs"],
        report["planted_pickle"],
        report["bad_values"],
    )
    print(f"\nfull disk ({disk['how']}): exit {disk['exit']}, run.json '{disk['status']}', traceback {disk['traceback']}, "
          f"leftovers {disk['leftovers']}, unreadable {disk['unreadable']}\n  {disk['message']}")  # fmt: skip
    print(
        f"two runs into one folder: first exit {two['first_exit']}, second exit {two['second_exit']}\n  {two['second_message']}"
    )
    print(
        f"planted pickle: exit {pickled['exit']}, refused {pickled['refused']}, code ran {pickled['code_ran']}"
    )
    print(
        f"bad values: {values['clear']}/{values['rows']} stopped with the expected one-line message, no traceback"
    )
    print(f"total time: {report['seconds']} s")


if __name__ == "__main__":
    main()
