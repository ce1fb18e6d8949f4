"""The job queue: SQLite in WAL mode (`WORKSPACE/lorakit.db`) and the runner thread.

States: queued -> running -> done | failed | stopped | interrupted; a queued job can be
cancelled (stopped); an interrupted, stopped or failed job can be queued again (a training then
resumes from its last saved state with `--resume=auto`). Every change of state is one
`BEGIN IMMEDIATE` transaction with the state it expects in its WHERE clause, so two threads (or
a restarted server) never both move a job.

The runner starts with the server. Each tick it looks at the running jobs — a job is alive while
its supervisor or its process (pid + start time, so a reused pid is not mistaken for it) is —
finishes the ones that ended (reading `exit.json`, and for trainings the `end` event), delivers
stop requests (SIGINT to the job's process group, SIGKILL after `stop_grace_seconds`), and
starts the next queued job on each device with a free slot. Nothing about a running job lives
only in memory: after a server restart the same tick reattaches to it, or marks it interrupted
when its process is gone without an exit status.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, fields
from pathlib import Path

from ..runs import EVENTS_FILE, RunFolder
from ..training import checkpointing as ckpt
from ..training.events import read_events
from ..utils.files import atomic_path
from .errors import Conflict, NotFound, WebError
from .kinds import CONFIG_KINDS, JobSpec
from .supervise import EXIT_FILE, LOG_FILE, PROC_FILE, process_started
from .workspace import Workspace

STATES = ("queued", "running", "done", "failed", "stopped", "interrupted")
RESUMABLE = ("interrupted", "stopped", "failed")
ENDED = ("done", "failed", "stopped", "interrupted")
LOG_TAIL_LINES = 40
CONFIG_FILE = "config.toml"

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    state TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    position INTEGER NOT NULL,
    device TEXT NOT NULL DEFAULT 'default',
    config TEXT,
    args TEXT NOT NULL DEFAULT '[]',
    output_dir TEXT,
    output_name TEXT,
    created_at REAL NOT NULL,
    started_at REAL,
    ended_at REAL,
    pid INTEGER,
    pid_started REAL,
    exit_code INTEGER,
    error TEXT,
    log_tail TEXT,
    stop_requested INTEGER NOT NULL DEFAULT 0,
    stop_sent_at REAL,
    resume INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state);
"""


@dataclass
class Job:
    id: int
    kind: str
    name: str
    state: str
    priority: int
    position: int
    device: str
    config: str | None
    args: str
    output_dir: str | None
    output_name: str | None
    created_at: float
    started_at: float | None
    ended_at: float | None
    pid: int | None
    pid_started: float | None
    exit_code: int | None
    error: str | None
    log_tail: str | None
    stop_requested: int
    stop_sent_at: float | None
    resume: int
    attempts: int

    @property
    def argv(self) -> list[str]:
        return json.loads(self.args)

    @property
    def events_path(self) -> Path | None:
        return Path(self.output_dir) / EVENTS_FILE if self.kind == "train" and self.output_dir else None


_COLUMNS = [f.name for f in fields(Job)]


class JobStore:
    """All reads and writes of the jobs table; one connection per thread."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._local = threading.local()
        self._db().executescript(SCHEMA)

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            self._local.db = db
        return db

    @contextlib.contextmanager
    def transaction(self):
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def _rows(self, db, sql: str, params=()) -> list[Job]:
        return [Job(*row) for row in db.execute(f"SELECT {', '.join(_COLUMNS)} FROM jobs {sql}", params)]

    def get(self, job_id: int) -> Job:
        found = self._rows(self._db(), "WHERE id = ?", (job_id,))
        if not found:
            raise NotFound(f"there is no job {job_id}.")
        return found[0]

    def jobs(self, states: list[str] | None = None) -> list[Job]:
        """In queue order: running first, then queued by priority and position, then the rest newest first."""
        where = f"WHERE state IN ({', '.join('?' * len(states))})" if states else ""
        order = (
            "ORDER BY CASE state WHEN 'running' THEN 0 WHEN 'queued' THEN 1 ELSE 2 END, "
            "CASE WHEN state = 'queued' THEN -priority ELSE 0 END, "
            "CASE WHEN state = 'queued' THEN position ELSE -id END, id"
        )
        return self._rows(self._db(), f"{where} {order}", states or ())

    # -- transitions ---------------------------------------------------------------------------

    def submit(self, spec: JobSpec, workspace: Workspace, priority: int = 0, device: str = "default") -> Job:
        """Check the output folder against other runs, then queue (one transaction)."""
        with self.transaction() as db:
            if spec.kind == "train":
                self._check_collision(db, spec, workspace)
            position = db.execute("SELECT COALESCE(MAX(position), 0) + 1 FROM jobs").fetchone()[0]
            cursor = db.execute(
                "INSERT INTO jobs (kind, name, state, priority, position, device, config, args, output_dir, "
                "output_name, created_at) VALUES (?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    spec.kind,
                    spec.name,
                    priority,
                    position,
                    device,
                    spec.config,
                    json.dumps(spec.args),
                    str(spec.output_dir) if spec.output_dir else None,
                    spec.output_name,
                    time.time(),
                ),
            )
            job_id = cursor.lastrowid
            folder = workspace.job_dir(job_id)
            folder.mkdir(parents=True, exist_ok=True)
            if spec.config is not None:
                with atomic_path(folder / CONFIG_FILE) as tmp:
                    tmp.write_text(spec.config, encoding="utf-8")
        return self.get(job_id)

    def _check_collision(self, db, spec: JobSpec, workspace: Workspace) -> None:
        folder = Path(spec.output_dir)
        for job in self._rows(db, "WHERE kind = 'train' AND output_dir = ?", (str(folder),)):
            taken = job.state != "failed" or (folder / "run.json").exists()
            if taken:
                what = "the same output_name" if job.output_name == spec.output_name else "its output folder"
                raise Conflict(
                    f"{folder} is the output folder of job {job.id} ({job.name}, {job.state}) with {what}; "
                    f"a second run there would mix their files. {suggest_name(spec, workspace)}"
                    + (f" Or resume job {job.id}." if job.state in RESUMABLE else "")
                )
        if folder.is_dir() and any(
            (folder / f).exists() for f in ("run.json", EVENTS_FILE, f"{spec.output_name}.safetensors")
        ):
            raise Conflict(
                f"{folder} already holds a training run (run.json or {spec.output_name}.safetensors). "
                + suggest_name(spec, workspace)
            )

    def claim_next(self, per_device: int) -> Job | None:
        """Mark the first waiting job whose device has a free slot as running, and return it."""
        with self.transaction() as db:
            running: dict[str, int] = {}
            for (device,) in db.execute("SELECT device FROM jobs WHERE state = 'running'"):
                running[device] = running.get(device, 0) + 1
            for job in self._rows(db, "WHERE state = 'queued' ORDER BY priority DESC, position, id"):
                if running.get(job.device, 0) < per_device:
                    db.execute(
                        "UPDATE jobs SET state = 'running', started_at = ?, ended_at = NULL, pid = NULL, "
                        "pid_started = NULL, exit_code = NULL, error = NULL, stop_sent_at = NULL, "
                        "attempts = attempts + 1 WHERE id = ? AND state = 'queued'",
                        (time.time(), job.id),
                    )
                    return self._rows(db, "WHERE id = ?", (job.id,))[0]
        return None

    def set_process(self, job_id: int, pid: int, started: float | None) -> None:
        with self.transaction() as db:
            db.execute("UPDATE jobs SET pid = ?, pid_started = ? WHERE id = ?", (pid, started, job_id))

    def finish(
        self, job_id: int, state: str, exit_code: int | None, error: str | None, log_tail: str
    ) -> bool:
        with self.transaction() as db:
            done = db.execute(
                "UPDATE jobs SET state = ?, ended_at = ?, exit_code = ?, error = ?, log_tail = ? "
                "WHERE id = ? AND state = 'running'",
                (state, time.time(), exit_code, error, log_tail, job_id),
            ).rowcount
        return bool(done)

    def request_stop(self, job_id: int) -> Job:
        """A queued job is cancelled (stopped) at once; a running one is asked to stop."""
        with self.transaction() as db:
            job = self._one(db, job_id)
            if job.state == "queued":
                db.execute(
                    "UPDATE jobs SET state = 'stopped', ended_at = ?, error = 'cancelled before it started' "
                    "WHERE id = ?",
                    (time.time(), job_id),
                )
            elif job.state == "running":
                db.execute("UPDATE jobs SET stop_requested = 1 WHERE id = ?", (job_id,))
            else:
                raise Conflict(f"job {job_id} is {job.state}; only a queued or running job can be stopped.")
        return self.get(job_id)

    def mark_stop_sent(self, job_id: int) -> None:
        with self.transaction() as db:
            db.execute("UPDATE jobs SET stop_sent_at = ? WHERE id = ?", (time.time(), job_id))

    def requeue(self, job_id: int) -> Job:
        """Queue an ended job again, at the end of the queue; a training resumes from its state."""
        with self.transaction() as db:
            job = self._one(db, job_id)
            if job.state not in RESUMABLE:
                raise Conflict(
                    f"job {job_id} is {job.state}; only {', '.join(RESUMABLE)} jobs can be resumed."
                )
            position = db.execute("SELECT COALESCE(MAX(position), 0) + 1 FROM jobs").fetchone()[0]
            db.execute(
                "UPDATE jobs SET state = 'queued', position = ?, stop_requested = 0, stop_sent_at = NULL, "
                "resume = ?, ended_at = NULL, exit_code = NULL, error = NULL WHERE id = ?",
                (position, 1 if job.kind == "train" else 0, job_id),
            )
        return self.get(job_id)

    def reorder(self, order: list[int]) -> list[Job]:
        """The queued jobs in `order` go first, in that order; the other queued jobs follow."""
        with self.transaction() as db:
            queued = [
                j.id for j in self._rows(db, "WHERE state = 'queued' ORDER BY priority DESC, position, id")
            ]
            wrong = [i for i in order if i not in queued]
            if wrong or len(set(order)) != len(order):
                raise Conflict(
                    f"only waiting jobs can be reordered, each once; not waiting: {wrong or 'repeated ids'}. "
                    f"Waiting now: {queued}."
                )
            for position, job_id in enumerate([*order, *(i for i in queued if i not in order)], start=1):
                db.execute("UPDATE jobs SET position = ?, priority = 0 WHERE id = ?", (position, job_id))
        return self.jobs(["queued"])

    def update(self, job_id: int, name: str | None = None, priority: int | None = None) -> Job:
        with self.transaction() as db:
            self._one(db, job_id)
            if name is not None:
                db.execute("UPDATE jobs SET name = ? WHERE id = ?", (name, job_id))
            if priority is not None:
                db.execute("UPDATE jobs SET priority = ? WHERE id = ?", (priority, job_id))
        return self.get(job_id)

    def delete(self, job_id: int) -> None:
        """Forget an ended job (its files stay)."""
        with self.transaction() as db:
            job = self._one(db, job_id)
            if job.state not in ENDED:
                raise Conflict(f"job {job_id} is {job.state}; stop it before deleting it.")
            db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))

    def _one(self, db, job_id: int) -> Job:
        found = self._rows(db, "WHERE id = ?", (job_id,))
        if not found:
            raise NotFound(f"there is no job {job_id}.")
        return found[0]


def suggest_name(spec: JobSpec, workspace: Workspace) -> str:
    """A free output_name (and folder, where the folder follows the name)."""
    folder = Path(spec.output_dir)
    follows = folder.name == spec.output_name
    for n in range(2, 1000):
        name = f"{spec.output_name}-{n}"
        candidate = folder.with_name(name) if follows else folder
        if not (candidate / f"{name}.safetensors").exists() and not (follows and candidate.exists()):
            where = f" (output_dir {candidate.relative_to(workspace.root)})" if follows else ""
            return f"Choose another output_name, for example {name!r}{where}."
    return "Choose another output_name."


# -- the runner ------------------------------------------------------------------------------------


def read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> list[str]:
    """The last lines of a job's log; a progress bar's redraws (\\r) count as its last state."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 256 * 1024))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return []
    out = [line.rsplit("\r", 1)[-1].rstrip() for line in text.split("\n")]
    return [line for line in out if line][-lines:]


def outcome(job: Job, exit_code: int | None, end: dict | None, tail: list[str]) -> tuple[str, str | None]:
    """(state, error) of a job whose processes are gone."""
    status = (end or {}).get("status")
    error = (end or {}).get("error") or next(
        (line for line in reversed(tail) if line.startswith("error:")), None
    )
    if job.stop_requested or status == "stopped":
        return "stopped", None
    if exit_code == 0 and status in (None, "finished"):
        return "done", None
    if exit_code is None:
        if status == "finished":
            return "done", None
        return "interrupted", "the job's process ended while no exit status could be recorded (killed?)"
    if exit_code < 0 or exit_code == 130 or status == "interrupted":
        return (
            "interrupted",
            f"the job's process was killed (signal {-exit_code})" if exit_code < 0 else error,
        )
    return "failed", error or f"exit status {exit_code}"


class Runner:
    """Starts, watches and stops job processes; one thread, started with the server."""

    def __init__(
        self, workspace: Workspace, store: JobStore, python: str = sys.executable, poll: float = 0.5
    ):
        self.workspace, self.store, self.python, self.poll = workspace, store, python, poll
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None
        self._children: dict[int, subprocess.Popen] = {}

    def start(self) -> None:
        self.tick()  # reattach or finish what a previous server left running, before serving
        self._thread = threading.Thread(target=self._loop, name="lorakit-jobs", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop watching; the job processes keep running (a later server reattaches)."""
        self._closing.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout=10)

    def wake(self) -> None:
        self._wake.set()

    def _loop(self) -> None:
        while not self._closing.is_set():
            self._wake.wait(self.poll)
            self._wake.clear()
            if self._closing.is_set():
                break
            try:
                self.tick()
            except Exception as e:  # noqa: BLE001 - the runner must outlive any one bad tick
                print(f"lorakit ui: job runner: {type(e).__name__}: {e}", file=sys.stderr)

    def tick(self) -> None:
        for job in self.store.jobs(["running"]):
            self._watch(job)
        while not self._closing.is_set():
            job = self.store.claim_next(self.workspace.settings.jobs_per_device)
            if job is None:
                break
            self._spawn(job)

    # -- one job ----------------------------------------------------------------------------------

    def alive(self, job: Job) -> bool:
        child = self._children.get(job.id)
        if child is not None and child.poll() is not None:  # reap our own child
            self._children.pop(job.id, None)
        proc = read_json(self.workspace.job_dir(job.id) / PROC_FILE) or {}
        pairs = [(job.pid, job.pid_started), (proc.get("pid"), proc.get("started"))]
        return any(
            pid and started is not None and _same_start(process_started(pid), started)
            for pid, started in pairs
        )

    def _watch(self, job: Job) -> None:
        if self.alive(job):
            if job.stop_requested:
                self._deliver_stop(job)
            return
        if job.pid is None and job.started_at and time.time() - job.started_at < 5:
            return  # being started by this runner right now
        folder = self.workspace.job_dir(job.id)
        exit_code = (read_json(folder / EXIT_FILE) or {}).get("code")
        end = None
        if job.events_path is not None:
            ends = [
                e
                for e in read_events(job.events_path, kinds=["plan", "end"])
                if e["time"] >= (job.started_at or 0) - 1
            ]
            end = ends[-1] if ends and ends[-1]["kind"] == "end" else None
        tail = log_tail(folder / LOG_FILE)
        state, error = outcome(job, exit_code, end, tail)
        self.store.finish(job.id, state, exit_code, error, "\n".join(tail))

    def _deliver_stop(self, job: Job) -> None:
        if job.stop_sent_at is None:
            self._signal(job, signal.SIGINT)
            self.store.mark_stop_sent(job.id)
        elif time.time() - job.stop_sent_at > self.workspace.settings.stop_grace_seconds:
            self._signal(job, signal.SIGKILL)

    def _signal(self, job: Job, sig: int) -> None:
        """To the job's process group (the supervisor's session): the command and its workers."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(job.pid, sig)

    def command(self, job: Job) -> list[str]:
        """The `lorakit` arguments of a job."""
        if job.kind in CONFIG_KINDS:
            config = str(self.workspace.job_dir(job.id) / CONFIG_FILE)
            resume = ["--resume=auto"] if job.resume and job.kind == "train" else []
            return [job.kind, config, *job.argv, *resume]
        return [job.kind, *job.argv]

    def _spawn(self, job: Job) -> None:
        folder = self.workspace.job_dir(job.id)
        folder.mkdir(parents=True, exist_ok=True)
        for name in (EXIT_FILE, PROC_FILE):
            (folder / name).unlink(missing_ok=True)
        argv = [
            self.python,
            "-m",
            "lorakit.web.supervise",
            str(folder),
            "--",
            self.python,
            "-m",
            "lorakit.cli.main",
        ]
        env = dict(os.environ, PYTHONUNBUFFERED="1", TQDM_MININTERVAL="5", LORAKIT_JOB=str(job.id))
        if job.device.startswith("cuda:"):
            env["CUDA_VISIBLE_DEVICES"] = job.device.split(":", 1)[1]
        try:
            with open(folder / "supervise.log", "ab") as errors:
                child = subprocess.Popen(
                    [*argv, *self.command(job)],
                    cwd=self.workspace.root,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=errors,
                    start_new_session=True,
                    env=env,
                )
        except OSError as e:
            self.store.finish(job.id, "failed", None, f"could not start the job: {e}", "")
            return
        self._children[job.id] = child
        self.store.set_process(job.id, child.pid, process_started(child.pid))


def _same_start(now: float | None, recorded: float) -> bool:
    return now is not None and abs(now - recorded) < 0.05


def saved_state(job: Job) -> Path | None:
    """The state a resumed training would continue from (None: it starts again)."""
    if job.kind != "train" or not job.output_dir or not job.output_name:
        return None
    state, _ = ckpt.latest_state(RunFolder(Path(job.output_dir), job.output_name))
    return state


def check_device(device: str) -> str:
    if (
        not isinstance(device, str)
        or not device
        or len(device) > 32
        or not device.replace(":", "").replace("-", "").isalnum()
    ):
        raise WebError(f"device {device!r}: use a name like 'default', 'cpu' or 'cuda:0'.")
    return device
