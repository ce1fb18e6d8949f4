#!/usr/bin/env python3
"""Set up lorakit in a project virtual environment (.venv) and run it: one command from a fresh
clone, with only Python 3.10+ and git on the machine.

    python3 bootstrap.py quickstart     # the whole LoRA routine on the shipped tiny model
    python3 bootstrap.py test           # ruff, then the test suite
    python3 bootstrap.py shell          # just set up; prints how to activate .venv

torch comes as the CPU build where no NVIDIA GPU is present (a plain `pip install torch` on
Linux downloads gigabytes of CUDA libraries) and as the CUDA build, with bitsandbytes for the
8-bit optimizers, where one is. A second run reuses .venv unless pyproject.toml changed.
Standard library only: this file runs before anything is installed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import sys
import venv
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
TORCH = "torch==2.13.0"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def has_nvidia_gpu() -> bool:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return False
    try:
        return subprocess.run([smi, "-L"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def reachable(url: str, timeout: float = 5.0) -> bool:
    """Whether `url`'s host answers at all: pip retries an unreachable index five times per
    package, which costs minutes on a machine that reaches only PyPI or a local mirror."""
    try:
        socket.create_connection((urlparse(url).hostname, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def venv_python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def run(*args: str | Path, env: dict | None = None) -> None:
    print("+", " ".join(str(a) for a in args), flush=True)
    code = subprocess.call([str(a) for a in args], cwd=ROOT, env=env)
    if code:
        sys.exit(code)


def ensure_environment(extras: list[str]) -> Path:
    """Create .venv and install lorakit (editable) with `extras`; skipped when nothing changed."""
    gpu = has_nvidia_gpu()
    extras = [*extras, "cuda"] if gpu else extras
    stamp = hashlib.sha256(
        (ROOT / "pyproject.toml").read_bytes() + repr((TORCH, sorted(extras), gpu)).encode()
    ).hexdigest()
    stamp_file = VENV / ".lorakit-installed"
    python = venv_python()
    if python.exists() and stamp_file.exists() and stamp_file.read_text() == stamp:
        return python
    if not python.exists():
        print(f"creating {VENV}", flush=True)
        try:
            venv.EnvBuilder(with_pip=True).create(VENV)
        except (OSError, subprocess.CalledProcessError) as e:
            sys.exit(
                f"could not create {VENV} ({e}). On Debian/Ubuntu install the venv module first: "
                "sudo apt install python3-venv"
            )
    run(python, "-m", "pip", "install", "-q", "--upgrade", "pip")
    where = "the CUDA build (an NVIDIA GPU is present)" if gpu else "the CPU build (no NVIDIA GPU found)"
    print(f"installing {TORCH}, {where}", flush=True)
    # the CPU wheels are offered beside PyPI's; pip takes the +cpu one where the index answers
    cpu = [] if gpu or sys.platform != "linux" else ["--extra-index-url", CPU_INDEX]
    if cpu and not reachable(CPU_INDEX):
        print(
            f"note: {urlparse(CPU_INDEX).hostname} cannot be reached: torch comes from PyPI or your pip "
            "index instead (on Linux PyPI's build brings CUDA libraries, a larger download)",
            flush=True,
        )
        cpu = []
    run(python, "-m", "pip", "install", "-q", TORCH, *cpu)
    target = f".[{','.join(extras)}]" if extras else "."
    run(python, "-m", "pip", "install", "-q", "-e", target)
    stamp_file.write_text(stamp)
    return python


def main(argv: list[str]) -> None:
    if sys.version_info < (3, 10):
        sys.exit(f"lorakit needs Python 3.10 or newer; this is {sys.version.split()[0]}.")
    task = argv[0] if argv else "quickstart"
    rest = argv[1:]
    env = dict(os.environ, HF_HUB_OFFLINE=os.environ.get("HF_HUB_OFFLINE", "1"))
    if task == "quickstart":
        python = ensure_environment([])
        run(python, "-m", "lorakit.cli.main", "quickstart", *rest, env=env)
    elif task == "test":
        python = ensure_environment(["test"])
        run(python, "-m", "ruff", "check", "src", "tests", "benchmarks", "scripts", env=env)
        run(python, "-m", "pytest", *rest, env=env)
    elif task == "shell":
        ensure_environment(["test"])
        activate = VENV / ("Scripts\\activate" if os.name == "nt" else "bin/activate")
        print(f"ready. Activate it with:  . {activate}   (then: lorakit --help)")
    else:
        sys.exit(f"unknown task {task!r}: use quickstart, test or shell (python3 bootstrap.py quickstart).")


if __name__ == "__main__":
    main(sys.argv[1:])
