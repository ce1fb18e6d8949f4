"""The job queue with real processes: a `lorakit ui` server process, trainings on the tiny model,
kill -9 of the server and of a job, stop, resume, and the event stream read mid-run."""

import json
import os
import re
import signal
import threading

import httpx
import pytest
from web_helpers import Server, kill_tree_of, make_workspace, train_config, wait_for, wait_state

from lorakit.training.events import read_events

# a LoRA and a state saved each epoch (2 steps): long enough to act on mid-run
LONG = "save_every_n_epochs = 1\nsave_state = true\n"


@pytest.fixture
def served(running):
    workspace, _, servers = running
    return workspace, servers[-1]


@pytest.fixture
def restart(running):
    workspace, _, servers = running

    def start_again() -> Server:
        servers.append(Server(workspace.root, port=servers[-1].port).start())
        return servers[-1]

    return start_again


def _events(workspace, name):
    path = workspace.root / "runs" / name / "events.jsonl"
    return read_events(path) if path.exists() else []


def _proc(workspace, job_id):
    path = workspace.root / "jobs" / str(job_id) / "proc.json"
    return json.loads(path.read_text()) if path.exists() else None


@pytest.fixture(scope="module")
def running(tmp_path_factory, tiny_checkpoints):
    """One workspace and one server for the module (the last test replaces the server)."""
    workspace = make_workspace(tmp_path_factory.mktemp("queue") / "ws", tiny_checkpoints["sd1"])
    servers = [Server(workspace.root).start()]
    yield workspace, servers[0], servers
    servers[-1].stop()
    for job in os.listdir(workspace.root / "jobs"):
        if job.isdigit():
            kill_tree_of(workspace.root, int(job))


def _read_stream(url, into, headers=None, stop_after=None):
    """Collect the events of an SSE stream; return the last id read when stopping early."""
    with httpx.stream("GET", url, headers=headers or {}, timeout=120) as response:
        assert response.status_code == 200
        event_id = None
        for line in response.iter_lines():
            if line.startswith("id: "):
                event_id = int(line[4:])
            elif line.startswith("data: "):
                into.append(json.loads(line[6:]))
                if stop_after and len(into) >= stop_after:
                    return event_id
    return event_id


def test_three_jobs_run_in_order_and_clients_follow_the_first_ones_events(served):
    """Three trainings queued run one after another (the third moved before the second);
    an event stream opened mid-run, and one that disconnects and reconnects with
    Last-Event-ID, both get every step event of the first training once, in order."""
    workspace, server = served
    configs = [train_config("o0", 10), train_config("o1"), train_config("o2")]
    with server.client() as api:
        ids = [api.post("/api/jobs", json={"kind": "train", "config": c}).json()["id"] for c in configs]
        wait_for(lambda: any(e["kind"] == "step" for e in _events(workspace, "o0")), what="the first step")
        api.put("/api/queue", json={"order": [ids[2]]})  # the last one moves up, before the second
        url = f"{server.url}/api/jobs/{ids[0]}/events"
        whole, parts = [], []
        mid_run = threading.Thread(target=_read_stream, args=(url, whole))
        mid_run.start()
        last = _read_stream(url, parts, stop_after=4)  # disconnect after 4 events ...
        _read_stream(url, parts, headers={"Last-Event-ID": str(last)})  # ... and reconnect from there
        mid_run.join(150)
        jobs = [wait_state(api, i, ("done", "failed")) for i in ids]
    assert [j["state"] for j in jobs] == ["done"] * 3, [j["log_tail"][-5:] for j in jobs]
    first, second, third = jobs[0], jobs[2], jobs[1]  # the order after the move
    assert first["ended_at"] <= second["started_at"] and second["ended_at"] <= third["started_at"]
    for i in range(3):
        assert (workspace.root / "runs" / f"o{i}" / f"o{i}.safetensors").is_file()
        assert _events(workspace, f"o{i}")[-1]["status"] == "finished"
    for received in (whole, parts):
        steps = [e["step"] for e in received if e["kind"] == "step"]
        assert steps == list(range(1, 21)), steps
        assert [e["id"] for e in received] == sorted({e["id"] for e in received})  # in order, none twice
        assert received[-1]["kind"] == "end"


def test_killed_job_is_interrupted_and_resumes_to_the_planned_steps(served):
    workspace, server = served
    with server.client() as api:
        job = api.post("/api/jobs", json={"kind": "train", "config": train_config("k", 4, LONG)}).json()
        wait_for(
            lambda: any(e["kind"] == "saved" and e["what"] == "state" for e in _events(workspace, "k")),
            what="the first saved state",
        )
        os.kill(_proc(workspace, job["id"])["pid"], signal.SIGKILL)  # kill -9 the training itself
        killed = wait_state(api, job["id"], ("interrupted", "failed", "done"))
        assert killed["state"] == "interrupted" and "signal 9" in killed["error"]
        resumed = api.post(f"/api/jobs/{job['id']}/resume").json()
        assert resumed["resumes_from"].startswith("runs/k/k-") and resumed["resumes_from"].endswith("-state")
        done = wait_state(api, job["id"], ("done", "failed", "interrupted"))
    assert done["state"] == "done" and done["attempts"] == 2
    events = _events(workspace, "k")
    assert [e["id"] for e in events] == list(range(1, len(events) + 1))  # one file, ids continued
    plans = [e for e in events if e["kind"] == "plan"]
    assert len(plans) == 2 and plans[1]["start_step"] >= 2 and plans[1]["resumed_from"]
    assert events[-1]["kind"] == "end" and events[-1]["status"] == "finished" and events[-1]["step"] == 8
    record = json.loads((workspace.root / "runs" / "k" / "run.json").read_text())
    assert record["steps"] == 8 and record["status"] == "finished"


def test_stopped_job_keeps_its_last_saved_state(served):
    workspace, server = served
    with server.client() as api:
        job = api.post("/api/jobs", json={"kind": "train", "config": train_config("s", 50)}).json()
        wait_for(lambda: any(e["kind"] == "step" for e in _events(workspace, "s")), what="the first step")
        api.post(f"/api/jobs/{job['id']}/control", json={"action": "save"})
        wait_for(
            lambda: any(e["kind"] == "saved" and e["what"] == "state" for e in _events(workspace, "s")),
            what="save now",
        )
        assert api.post(f"/api/jobs/{job['id']}/stop").json()["stop_requested"]
        stopped = wait_state(api, job["id"], ("stopped", "failed", "done", "interrupted"))
    assert stopped["state"] == "stopped"
    state = json.loads((workspace.root / "runs" / "s" / "s-state" / "train_state.json").read_text())
    end = _events(workspace, "s")[-1]
    assert (
        end["kind"] == "end" and end["status"] == "interrupted" and state["current_step"] == end["step"] > 0
    )
    assert any(
        re.fullmatch(r"s-step\d{8}\.safetensors", p.name) for p in (workspace.root / "runs" / "s").iterdir()
    )


def test_server_killed_while_a_job_runs_reattaches_or_resumes(served, restart):
    """Last in the module: it kills the module's server and starts another on the same port."""
    workspace, server = served
    with server.client() as api:
        job = api.post("/api/jobs", json={"kind": "train", "config": train_config("r", 4, LONG)}).json()
        wait_for(lambda: any(e["kind"] == "step" for e in _events(workspace, "r")), what="the first step")
    server.kill()  # kill -9: the job runs on in its own session
    assert _events(workspace, "r")[-1]["kind"] != "end"
    os.kill(_proc(workspace, job["id"])["pid"], 0)  # the training is still alive
    server = restart()
    with server.client() as api:
        seen = api.get(f"/api/jobs/{job['id']}").json()["state"]
        assert seen in ("running", "done"), seen  # reattached by pid, or it ended on its own meanwhile
        final = wait_state(api, job["id"], ("done", "interrupted", "failed"))
        if final["state"] == "interrupted":
            api.post(f"/api/jobs/{job['id']}/resume")
            final = wait_state(api, job["id"], ("done", "failed"))
    assert final["state"] == "done"
    end = _events(workspace, "r")[-1]
    assert end["status"] == "finished" and end["step"] == 8
