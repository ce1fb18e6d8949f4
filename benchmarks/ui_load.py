"""Load on `lorakit ui` while a tiny training runs, on 127.0.0.1 only, bounded in count and time.

    python benchmarks/ui_load.py [--seconds 30] [--clients 50] [--rate 50] [--out RESULT.json]

One training of the tiny model runs through the queue. Quiet and loaded windows alternate (3 of
each, `--seconds` loaded in all): in a loaded window `--clients` event-stream clients follow the
training and `--rate` API reads per second (job list, job detail, event history, runs) hit the
server. Alternating windows of one run compare like with like even when other work on the
machine comes and goes. Reported: error responses, API latency (p50/p95/p99), the training's
step rate in quiet and in loaded windows, and the share of a core the server used in each.

The load generator runs in this process at nice 10, so that on 2 cores it takes what the
training and the server leave over: what is measured is the server's cost, not the generator's.
`--smoke` runs a few seconds with 5 clients (a quick check that the script works).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil
from PIL import Image, ImageDraw

SRC = Path(__file__).resolve().parents[1] / "src"


def make_workspace(root: Path) -> None:
    from lorakit.models.tiny import write_checkpoint

    (root / "models").mkdir(parents=True)
    write_checkpoint(root / "models" / "tiny.safetensors", "sd1")
    folder = root / "datasets" / "star" / "1_sks star"
    folder.mkdir(parents=True)
    for i in range(2):
        image = Image.new("RGB", (64, 64), "white")
        ImageDraw.Draw(image).ellipse([8 + 4 * i, 8, 52, 52], fill=(220, 0, 220))
        image.save(folder / f"{i}.png")
        (folder / f"{i}.txt").write_text(f"sks, magenta circle {i}")


def config(name: str, epochs: int) -> str:
    return (
        'pretrained_model_name_or_path = "models/tiny.safetensors"\ntrain_data_dir = "datasets/star"\n'
        'caption_extension = ".txt"\nresolution = "64"\nnetwork_dim = 4\nnetwork_alpha = 4\n'
        f'learning_rate = 1e-3\nseed = 7\nmax_train_epochs = {epochs}\noutput_name = "{name}"\nlog_with = "none"\n'
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def steps(workspace: Path, name: str) -> list[tuple[float, int]]:
    path = workspace / "runs" / name / "events.jsonl"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        event = json.loads(line)
        if event["kind"] == "step":
            out.append((event["time"], event["step"]))
    return out


async def load(url: str, job_id: int, seconds: float, clients: int, per_second: float) -> dict:
    latencies: list[float] = []
    errors: list[str] = []
    received = [0] * clients
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=clients + 64, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:

        async def follow(i: int) -> None:
            try:
                async with client.stream("GET", f"/api/jobs/{job_id}/events") as response:
                    if response.status_code != 200:
                        errors.append(f"stream {response.status_code}")
                        return
                    async for line in response.aiter_lines():
                        if line.startswith("data: "):
                            received[i] += 1
                        if time.monotonic() > deadline:
                            return
            except httpx.HTTPError as e:
                errors.append(f"stream {type(e).__name__}")

        async def read(path: str) -> None:
            began = time.perf_counter()
            try:
                response = await client.get(path)
                if response.status_code >= 400:
                    errors.append(f"{path}: {response.status_code}")
            except httpx.HTTPError as e:
                errors.append(f"{path}: {type(e).__name__}")
            latencies.append(time.perf_counter() - began)

        streams = [asyncio.create_task(follow(i)) for i in range(clients)]
        paths = [
            "/api/jobs",
            f"/api/jobs/{job_id}",
            f"/api/jobs/{job_id}/events/history?kind=end",
            "/api/runs",
        ]
        reads, n = [], 0
        began = time.monotonic()
        while time.monotonic() < deadline:
            reads.append(asyncio.create_task(read(paths[n % len(paths)])))
            n += 1
            await asyncio.sleep(max(0.0, began + n / per_second - time.monotonic()))
        await asyncio.gather(*reads)
        for task in streams:
            task.cancel()
        await asyncio.gather(*streams, return_exceptions=True)
    return {
        "_latencies": latencies,
        "errors": errors[:20],
        "error_count": len(errors),
        "events_per_client": {"min": min(received), "max": max(received)},
    }


def percentiles(latencies: list[float]) -> dict:
    def pct(q: float) -> float:
        return (
            round(1000 * latencies[min(len(latencies) - 1, int(q * len(latencies)))], 1) if latencies else 0.0
        )

    return {"p50": pct(0.50), "p95": pct(0.95), "p99": pct(0.99), "max": pct(1.0)}


def wait(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise SystemExit(f"timed out waiting for {what}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--rate", type=float, default=50, help="API reads per second")
    parser.add_argument("--out", type=Path, help="Write the result as JSON here.")
    parser.add_argument("--smoke", action="store_true", help="5 clients, 5 reads/s, 5 seconds.")
    args = parser.parse_args()
    if args.smoke:
        args.seconds, args.clients, args.rate = 5, 5, 5
    args.seconds = min(args.seconds, 120)  # bounded, whatever is asked
    args.clients = min(args.clients, 200)
    root = Path(tempfile.mkdtemp(prefix="lorakit-ui-load-"))
    workspace = root / "ws"
    make_workspace(workspace)
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(SRC))
    server = subprocess.Popen(
        [sys.executable, "-m", "lorakit.cli.main", "ui", "--workspace", str(workspace), "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    api = httpx.Client(base_url=url, timeout=30)
    try:
        wait(lambda: _answers(api), 120, "the server")
        os.nice(10)
        phases = 3  # quiet and loaded windows alternate, so others' load on the machine hits both alike
        window = args.seconds / phases
        epochs = int(20 + 8 * 2 * args.seconds)  # longer than warm-up + all windows; stopped after
        job = api.post("/api/jobs", json={"kind": "train", "config": config("bench", epochs)}).json()
        wait(lambda: len(steps(workspace, "bench")) >= 10, 300, "the training to start")
        windows, measured = [], []
        process = psutil.Process(server.pid)
        for phase in range(2 * phases):
            loaded = phase % 2 == 1
            start, cpu = time.time(), sum(process.cpu_times()[:2])
            if loaded:
                measured.append(asyncio.run(load(url, job["id"], window, args.clients, args.rate)))
            else:
                time.sleep(window)
            end = time.time()
            windows.append(
                {
                    "loaded": loaded,
                    "start": start,
                    "seconds": end - start,
                    "server_cpu_s": sum(process.cpu_times()[:2]) - cpu,
                }
            )
        api.post(f"/api/jobs/{job['id']}/stop")
        wait(lambda: api.get(f"/api/jobs/{job['id']}").json()["state"] != "running", 120, "the stop")
        points = steps(workspace, "bench")

        def steps_per_s(loaded: bool) -> float:
            chosen = [w for w in windows if w["loaded"] == loaded]
            done = sum(
                len([t for t, _ in points if w["start"] <= t < w["start"] + w["seconds"]]) for w in chosen
            )
            return round(done / sum(w["seconds"] for w in chosen), 3)

        quiet, busy = steps_per_s(False), steps_per_s(True)
        latencies = sorted(x for m in measured for x in m.pop("_latencies"))
        result = {
            "seconds_loaded": round(sum(w["seconds"] for w in windows if w["loaded"]), 1),
            "clients": args.clients,
            "reads_per_second": args.rate,
            "quiet_steps_per_s": quiet,
            "loaded_steps_per_s": busy,
            "step_rate_change_pct": round(100 * (busy / quiet - 1), 1) if quiet else None,
            "server_cpu_share_quiet": round(
                sum(w["server_cpu_s"] for w in windows if not w["loaded"]) / args.seconds, 3
            ),
            "server_cpu_share_loaded": round(
                sum(w["server_cpu_s"] for w in windows if w["loaded"]) / args.seconds, 3
            ),
            "requests": len(latencies),
            "error_count": sum(m["error_count"] for m in measured),
            "errors": [e for m in measured for e in m["errors"]][:20],
            "latency_ms": percentiles(latencies),
            "events_per_client": {"min": min(m["events_per_client"]["min"] for m in measured)},
        }
        print(json.dumps(result, indent=2))
        if args.out:
            args.out.write_text(json.dumps(result, indent=2))
        return 0 if not result["error_count"] else 1
    finally:
        api.close()
        server.send_signal(signal.SIGINT)
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
        for proc in (workspace / "jobs").glob("*/proc.json"):
            try:
                os.killpg(json.loads(proc.read_text())["supervisor"], signal.SIGKILL)
            except (ProcessLookupError, PermissionError, ValueError, KeyError):
                pass
        shutil.rmtree(root, ignore_errors=True)


def _answers(api: httpx.Client) -> bool:
    try:
        return api.get("/api/info").status_code == 200
    except httpx.HTTPError:
        return False


if __name__ == "__main__":
    sys.exit(main())
