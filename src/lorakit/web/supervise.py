"""The parent of one job process: `python -m lorakit.web.supervise JOB_DIR -- COMMAND...`.

The server starts this in a session of its own, so the job outlives a server crash or restart.
It runs COMMAND (always `python -m lorakit.cli.main ...`, an argument list) with its output
in JOB_DIR/log.txt, writes both process ids and start times to JOB_DIR/proc.json, and the exit
status to JOB_DIR/exit.json when COMMAND ends — so a server that was not there at the end still
learns how the job ended. It imports nothing heavy and does nothing else.

Ctrl+C / SIGINT sent to the job's process group reaches COMMAND (training saves its state and
stops); this process only waits for it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

PROC_FILE = "proc.json"
EXIT_FILE = "exit.json"
LOG_FILE = "log.txt"


def process_started(pid: int | None) -> float | None:
    """Start time of `pid` (Unix seconds): with the pid it names one process, not a later one
    that got the same number. None when it is gone (or has ended and waits to be reaped)."""
    if not pid:
        return None
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
        return process.create_time()
    except psutil.Error:
        return None


def write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: python -m lorakit.web.supervise JOB_DIR -- COMMAND...", file=sys.stderr)
        return 2
    folder, command = Path(argv[0]), argv[2:]
    # a handler (not SIG_IGN, which the child would inherit): the child gets the default one
    signal.signal(signal.SIGINT, lambda *_: None)
    signal.signal(signal.SIGTERM, lambda *_: None)
    with open(folder / LOG_FILE, "ab", buffering=0) as log:
        log.write(f"\n$ {' '.join(command)}\n".encode())
        child = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    me = os.getpid()
    write_json(
        folder / PROC_FILE,
        {
            "supervisor": me,
            "supervisor_started": process_started(me),
            "pid": child.pid,
            "started": process_started(child.pid),
        },
    )
    while True:
        try:
            code = child.wait()
            break
        except InterruptedError:  # pragma: no cover - wait is restarted by Python itself
            continue
    write_json(folder / EXIT_FILE, {"code": code, "ended_at": time.time()})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
