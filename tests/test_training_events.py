"""The training's event log (events.jsonl) and its control requests, alone and inside train()."""

import json

import pytest
from training_helpers import make_folder_dataset, write_config

from lorakit.cli.main import main
from lorakit.runs import EVENTS_FILE
from lorakit.training import control
from lorakit.training.config import load_config
from lorakit.training.events import EventLog, EventTail, last_event_id, read_events
from lorakit.training.recipe import train

# -- the writer and readers, alone -----------------------------------------------------------


def test_events_have_increasing_ids_across_reopening_and_are_valid_json(tmp_path):
    path = tmp_path / "run" / EVENTS_FILE
    log = EventLog(path)
    log.plan(["alpha is above dim"], total_steps=3)
    log.step(1, 3, 1, 0.5, [1e-4])
    log.step(2, 3, 1, float("nan"), [1e-4])
    log.close()
    again = EventLog(path)  # a resumed run appends after the last id
    again.step(3, 3, 1, 0.25, [1e-4])
    again.end("finished", step=3)
    again.end("failed", step=3)  # a second end is ignored
    lines = path.read_text().splitlines()
    events = [json.loads(line) for line in lines]  # every line is strict JSON (no NaN token)
    assert [e["id"] for e in events] == [1, 2, 3, 4, 5, 6]
    assert [e["kind"] for e in events] == ["plan", "warning", "step", "step", "step", "end"]
    assert events[1]["message"] == "alpha is above dim"
    assert events[3]["loss"] == "nan" and events[3]["speed"] > 0 and events[3]["eta"] >= 0
    assert last_event_id(path) == 6


def test_a_line_cut_by_a_crash_is_skipped_and_the_next_writer_ends_it(tmp_path):
    path = tmp_path / EVENTS_FILE
    log = EventLog(path)
    log.emit("warning", message="one")
    log.close()
    with open(path, "a") as f:
        f.write('{"id": 2, "kind": "step", "lo')  # killed in the middle of a line
    assert last_event_id(path) == 1 and [e["id"] for e in read_events(path)] == [1]
    log = EventLog(path)
    log.emit("warning", message="two")
    assert [(e["id"], e["message"]) for e in read_events(path)] == [(1, "one"), (2, "two")]


def test_tail_returns_each_complete_event_once_and_waits_for_a_partial_line(tmp_path):
    path = tmp_path / EVENTS_FILE
    tail = EventTail(path)
    assert tail.poll() == []  # no file yet
    log = EventLog(path)
    for i in range(3):
        log.emit("warning", message=str(i))
    assert [e["id"] for e in tail.poll()] == [1, 2, 3]
    assert tail.poll() == []
    with open(path, "a") as f:
        f.write('{"id": 4, "kind": "warning", ')
        f.flush()
        assert tail.poll() == []
        f.write('"message": "4"}\n')
    assert [e["id"] for e in tail.poll()] == [4]
    assert [e["id"] for e in EventTail(path, after=2).poll()] == [3, 4]
    assert [e["id"] for e in read_events(path, after=1, limit=2)] == [2, 3]


def test_unknown_kind_and_disabled_log(tmp_path):
    with pytest.raises(ValueError, match="unknown event kind 'progress'"):
        EventLog(tmp_path / EVENTS_FILE).emit("progress")
    off = EventLog(tmp_path / "off" / EVENTS_FILE, enabled=False)
    off.step(1, 2, 1, 0.1, [1.0])
    off.end("finished")
    assert not (tmp_path / "off").exists()


# -- control requests, alone ---------------------------------------------------------------


def test_control_requests_are_served_in_order_once_and_stop_raises(tmp_path):
    done = []
    poller = control.ControlPoller(tmp_path)
    assert poller.serve(sample=lambda: done.append("sample"), save=lambda: done.append("save")) == []
    control.send(tmp_path, "save")
    control.send(tmp_path, "sample")
    assert poller.serve(sample=lambda: done.append("sample"), save=lambda: done.append("save")) == [
        "save",
        "sample",
    ]
    assert done == ["save", "sample"] and poller.poll() == []
    control.send(tmp_path, "sample")
    control.send(tmp_path, "stop")
    with pytest.raises(control.StopRequested):
        poller.serve(sample=lambda: done.append("sample"), save=lambda: done.append("save"))
    assert done[-1] == "sample" and control.pending(tmp_path) == []


def test_requests_from_before_a_run_are_dropped(tmp_path):
    control.send(tmp_path, "stop")
    poller = control.ControlPoller(tmp_path)
    assert [r.action for r in poller.dropped] == ["stop"] and poller.poll() == []


def test_bad_control_requests_say_what_to_do(tmp_path):
    with pytest.raises(control.ControlError, match="unknown control action 'pause'; use one of: sample"):
        control.send(tmp_path, "pause")
    with pytest.raises(control.ControlError, match="no such output folder"):
        control.send(tmp_path / "missing", "save")
    (tmp_path / control.CONTROL_DIR).mkdir()
    (tmp_path / control.CONTROL_DIR / "0-junk.json").write_text("{not json")
    assert control.pending(tmp_path) == []


def test_cli_control_sends_a_request(tmp_path, capsys):
    assert main(["train", "--control", "save", "--output_dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "sent 'save'" in out and "no training seems to be running" in out
    assert [r.action for r in control.pending(tmp_path)] == ["save"]
    with pytest.raises(SystemExit):
        main(["train", "--control", "pause", "--output_dir", str(tmp_path)])
    assert "invalid choice: 'pause' (choose from 'sample', 'save', 'stop')" in capsys.readouterr().err


# -- inside train() ------------------------------------------------------------------------


def test_training_writes_events_and_serves_requests_between_steps(tiny_checkpoints, tmp_path):
    """save now at step 2, sample now at step 3, stop at step 4; then resume to the end."""
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("sks --d 3 --s 1 --w 64 --h 64\n")
    train_dir = make_folder_dataset(tmp_path, images=2, repeats=1)
    out = tmp_path / "out"
    path = write_config(
        tmp_path / "c.toml",
        tiny_checkpoints["sd1"],
        f'train_data_dir = "{train_dir.as_posix()}"\ncaption_extension = ".txt"\nresolution = "64"\n'
        "network_dim = 4\nnetwork_alpha = 4\nlearning_rate = 1e-3\nmax_train_epochs = 3\nseed = 7\n"
        f'output_dir = "{out.as_posix()}"\noutput_name = "r"\nlog_with = "none"\n'
        f'sample_prompts = "{prompts.as_posix()}"\n',
    )
    requests = {2: "save", 3: "sample", 4: "stop"}

    def on_step(step, loss, lrs):
        if step in requests:
            control.send(out, requests[step])

    with pytest.raises(control.StopRequested):
        train(load_config(path), quiet=True, on_step=on_step)
    events = read_events(out / EVENTS_FILE)
    kinds = [e["kind"] for e in events]
    assert kinds[0] == "plan" and events[0]["total_steps"] == 6
    assert [e["step"] for e in events if e["kind"] == "step"] == [1, 2, 3, 4]
    saved = [(e["step"], e["what"]) for e in events if e["kind"] == "saved"]
    assert saved == [(2, "lora"), (2, "state"), (4, "state")]  # save now, then the state kept at stop
    assert (out / "r-step00000002.safetensors").is_file() and (out / "r-state").is_dir()
    sample = next(e for e in events if e["kind"] == "sample")
    assert sample["step"] == 3 and all((out / "sample" / f.split("/")[-1]).is_file() for f in sample["files"])
    assert events[-1]["kind"] == "end" and events[-1]["status"] == "stopped" and events[-1]["step"] == 4
    assert [e["kind"] for e in events].count("epoch") == 1  # epoch 1 ended at step 2

    train(load_config(path, {"resume": "auto"}), quiet=True)
    events = read_events(out / EVENTS_FILE)
    assert [e["id"] for e in events] == list(range(1, len(events) + 1))
    resumed = events[len(kinds) :]
    assert resumed[0]["kind"] == "plan" and resumed[0]["start_step"] == 4
    assert [e["step"] for e in resumed if e["kind"] == "step"] == [5, 6]
    assert resumed[-1]["kind"] == "end" and resumed[-1]["status"] == "finished"
    assert resumed[-1]["final_file"].endswith("r.safetensors")
