"""A run owns its folder: a second run into a busy folder is refused, a new run never replaces an
earlier run's files without --overwrite, and a dead run's lock and half-written files are cleared."""

import json
import os
import subprocess
import sys
import time

import pytest
from faultkit import write_config

from lorakit.training.config import load_config
from lorakit.training.outputs import LOCK_FILE, FolderTaken
from lorakit.training.recipe import train
from lorakit.utils.lock import FolderBusy, process_start


def test_a_second_run_into_a_busy_folder_is_refused(tmp_path):
    config = write_config(tmp_path, epochs=1)
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / "out").mkdir()
        lock = {"pid": holder.pid, "start": process_start(holder.pid), "host": os.uname().nodename,
                "since": "now", "what": "the training run 'f'"}  # fmt: skip
        (tmp_path / "out" / LOCK_FILE).write_text(json.dumps(lock))
        with pytest.raises(FolderBusy, match=rf"is in use by the training run 'f' \(process {holder.pid}"):
            train(load_config(config), quiet=True)
    finally:
        holder.kill()
        holder.wait()
    assert not (tmp_path / "out" / "run.json").exists()


def test_the_lock_of_a_dead_run_is_taken_over(tmp_path, capsys):
    config = write_config(tmp_path, epochs=1)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / LOCK_FILE).write_text(json.dumps({"pid": dead.pid, "host": os.uname().nodename}))
    (tmp_path / "out" / ".f.safetensors.abc123.tmp").mkdir()  # what a kill -9 mid-save leaves
    train(load_config(config))
    out = capsys.readouterr().out
    assert f"took over the lock of process {dead.pid}" in out and "removed 1 half-written file" in out
    assert not (tmp_path / "out" / LOCK_FILE).exists() and not list((tmp_path / "out").glob(".*.tmp"))


def test_a_new_run_never_replaces_an_earlier_runs_files(tmp_path):
    config = write_config(tmp_path, epochs=1)
    first = train(load_config(config), quiet=True)
    before = (first.final_file.stat().st_mtime_ns, first.record.read_text())
    time.sleep(0.01)
    with pytest.raises(FolderTaken, match=r"holds an earlier run of 'f' .*--resume auto.*--overwrite"):
        train(load_config(config, {"learning_rate": 1e-3}), quiet=True)
    with pytest.raises(FolderTaken, match=r"holds another run \('f', finished.*output_dir = \".*/out/g\""):
        train(load_config(config, {"output_name": "g"}), quiet=True)
    assert (first.final_file.stat().st_mtime_ns, first.record.read_text()) == before
    again = train(load_config(config, {"overwrite": True, "learning_rate": 1e-3}), quiet=True)
    record = json.loads(again.record.read_text())
    assert record["config"]["learning_rate"] == 1e-3 and "resumed_at" not in record  # a new record
