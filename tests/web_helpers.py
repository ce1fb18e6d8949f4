"""A workspace with the tiny model and a two-picture dataset, and a real `lorakit ui` process."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from fastapi.testclient import TestClient
from training_helpers import make_folder_dataset

from lorakit.web.app import create_app
from lorakit.web.workspace import Workspace

SRC = Path(__file__).resolve().parents[1] / "src"


def make_workspace(root: Path, checkpoint: Path) -> Workspace:
    workspace = Workspace.open(root)
    shutil.copy(checkpoint, workspace.root / "models" / "tiny.safetensors")
    make_folder_dataset(workspace.root / "datasets" / "star", images=2, repeats=1)
    return workspace


def copy_workspace(base: Path, root: Path, rewrite: str) -> Workspace:
    """A fresh copy of a workspace (links kept as links, no job database); the files matching
    the glob `rewrite` get the copy's path where they name the original's."""
    shutil.copytree(base, root, symlinks=True)
    for path in root.glob(rewrite):
        path.write_text(path.read_text().replace(str(base), str(root)))
    (root / "lorakit.db").unlink(missing_ok=True)
    return Workspace.open(root)


@contextlib.contextmanager
def api_client(workspace: Workspace, token: str | None = None, base_url: str = "http://127.0.0.1:7860"):
    """The API in this process (no jobs run), with the token sent when there is one."""
    app = create_app(workspace, token=token, run_jobs=False)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with TestClient(app, base_url=base_url, headers=headers) as client:
        yield client


def train_config(name: str, epochs: int = 1, extra: str = "") -> str:
    """A training TOML with workspace-relative paths: 2 steps per epoch."""
    return (
        'pretrained_model_name_or_path = "models/tiny.safetensors"\n'
        'train_data_dir = "datasets/star/train"\ncaption_extension = ".txt"\nresolution = "64"\n'
        "network_dim = 4\nnetwork_alpha = 4\nlearning_rate = 1e-3\nseed = 7\n"
        f'max_train_epochs = {epochs}\noutput_name = "{name}"\nlog_with = "none"\n' + extra
    )


def wait_for(check, timeout: float = 120, every: float = 0.1, what: str = "condition"):
    """Poll `check()` until it returns something truthy; fail with `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`lorakit ui` in its own process, on a free loopback port."""

    def __init__(self, workspace: Path, token: str | None = None, port: int | None = None):
        self.workspace, self.token = workspace, token
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> Server:
        env = dict(os.environ, PYTHONPATH=str(SRC), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        command = [sys.executable, "-m", "lorakit.cli.main", "ui", "--workspace", str(self.workspace)]
        command += ["--port", str(self.port)] + (["--token", self.token] if self.token else [])
        self.log = open(self.workspace / f"server-{self.port}-{time.time_ns()}.log", "wb")
        self.process = subprocess.Popen(command, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        wait_for(self._up, timeout=90, every=0.2, what="the server to answer")
        return self

    def _up(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"lorakit ui exited with {self.process.returncode}; see {self.log.name}")
        try:
            return self.client().get("/api/info", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def client(self, **kwargs) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, **kwargs)

    def kill(self) -> None:
        """kill -9: no clean-up of any kind."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.log.close()

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def job_state(client: httpx.Client, job_id: int) -> dict:
    return client.get(f"/api/jobs/{job_id}").json()


def wait_state(client: httpx.Client, job_id: int, states: tuple[str, ...], timeout: float = 150) -> dict:
    return wait_for(
        lambda: (job := job_state(client, job_id))["state"] in states and job,
        timeout=timeout,
        every=0.2,
        what=f"job {job_id} to be {' or '.join(states)}",
    )


def kill_tree_of(workspace: Path, job_id: int) -> None:
    """Clean-up after a test: end a job's processes that may still run (its process group)."""
    import json

    proc = workspace / "jobs" / str(job_id) / "proc.json"
    if proc.exists():
        pid = json.loads(proc.read_text())["supervisor"]
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
