"""The web API through FastAPI's TestClient: every endpoint with the token on and off, the
token on every route, path traversal, cross-site requests, and the endpoints' results."""

import io
import json
import re

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from PIL import Image
from web_helpers import api_client, copy_workspace, make_workspace, train_config

from lorakit.training.config import load_config
from lorakit.training.recipe import train
from lorakit.web.app import create_app
from lorakit.web.security import COOKIE, session_value

BASE = "http://127.0.0.1:7860"
TOKEN = "test-token-0123456789"
SECRET = "TOP-SECRET-CONTENT"


@pytest.fixture(scope="module")
def base_workspace(tmp_path_factory, tiny_checkpoints):
    """A workspace with the tiny model, a dataset, an allowed folder, links that point outside,
    and one real finished run (2 steps) — built once for the module."""
    root = tmp_path_factory.mktemp("api")
    outside = root / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text(SECRET)
    (root / "extra").mkdir()
    (root / "extra" / "note.txt").write_text("allowed folder")
    ws = make_workspace(root / "ws", tiny_checkpoints["sd1"])
    (ws.root / "settings.toml").write_text(
        f'jobs_per_device = 1\n[allow]\nextra = "{(root / "extra").as_posix()}"\n'
    )
    (ws.root / "datasets" / "link").symlink_to(outside, target_is_directory=True)
    (ws.root / "models" / "passwd.safetensors").symlink_to(outside / "secret.txt")
    (ws.root / "datasets" / "evil.toml").write_text(
        f'[[datasets]]\n[[datasets.subsets]]\nimage_dir = "{outside.as_posix()}"\n'
    )
    config = ws.root / "configs" / "real.toml"
    config.write_text(
        train_config("real", extra=f'output_dir = "{(ws.root / "runs" / "real").as_posix()}"\n')
        .replace("models/", f"{ws.root.as_posix()}/models/")
        .replace("datasets/", f"{ws.root.as_posix()}/datasets/")
    )
    train(load_config(config), quiet=True)
    return ws.root


@pytest.fixture
def workspace(base_workspace, tmp_path):
    """A fresh copy for each test (links kept as links), so tests do not see each other's changes."""
    return copy_workspace(base_workspace, tmp_path / "ws", "configs/*.toml")


@pytest.fixture(params=[None, TOKEN], ids=["no-token", "token"])
def api(request, workspace):
    with api_client(workspace, request.param, BASE) as client:
        yield client


def all_routes(routes) -> list:
    """Every route, also those of included routers and mounts (FastAPI may keep an included
    router as one entry of app.routes)."""
    out = []
    for route in routes:
        inner = getattr(getattr(route, "original_router", None), "routes", None) or getattr(
            route, "routes", None
        )
        out += all_routes(inner) if inner else [route]
    return out


def _url(route: APIRoute | object) -> str:
    return re.sub(r"\{(\w+)(:path)?\}", lambda m: "1" if m[1] == "job_id" else "x", route.path)


# -- access --------------------------------------------------------------------------------


def test_no_route_answers_without_the_token(workspace):
    app = create_app(workspace, token=TOKEN, run_jobs=False)
    found = all_routes(app.routes)
    routes = [(r, m) for r in found for m in getattr(r, "methods", None) or {"GET"} if m != "HEAD"]
    assert len(routes) >= 35  # the API, /docs, /openapi.json, pages
    documented = {(path, m.upper()) for path, ops in app.openapi()["paths"].items() for m in ops}
    enumerated = {(r.path.replace(":path}", "}"), m) for r, m in routes}
    assert documented <= enumerated  # the enumeration misses no API route
    with TestClient(app, base_url=BASE) as client:
        for route, method in routes:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Cookie": f"{COOKIE}=forged"}):
                response = client.request(method, _url(route), headers=headers)
                if route.path == "/login":
                    assert response.status_code in (200, 401, 403), (method, route.path)
                    assert SECRET not in response.text
                    continue
                assert response.status_code == 401, (method, route.path, headers, response.text)
                assert "a token is needed" in response.json()["detail"]
        # a browser asking for a page is sent to the login page
        page = client.get("/docs", headers={"Accept": "text/html"}, follow_redirects=False)
        assert page.status_code == 303 and page.headers["location"] == "/login?next=%2Fdocs"
        # logging in sets the session cookie (an HMAC of the token, not the token)
        bad = client.post("/login", data={"token": "nope", "next": "/docs"}, follow_redirects=False)
        assert bad.status_code == 401 and "wrong token" in bad.text
        good = client.post(
            "/login", data={"token": TOKEN, "next": "//evil.example/x"}, follow_redirects=False
        )
        assert good.status_code == 303 and good.headers["location"] == "/"  # no open redirect
        assert good.cookies[COOKIE] == session_value(TOKEN) != TOKEN
        assert client.get("/api/info").status_code == 200  # the cookie is kept by the client
        assert client.get("/openapi.json").status_code == 200


def test_without_a_token_only_loopback_host_names_are_served(workspace):
    app = create_app(workspace, token=None, run_jobs=False)
    with TestClient(app, base_url=BASE) as client:
        assert client.get("/api/info").status_code == 200
        for host in ("localhost:7860", "[::1]:7860"):
            assert client.get("/api/info", headers={"Host": host}).status_code == 200
        rebound = client.get("/api/info", headers={"Host": "evil.example:7860"})
        assert rebound.status_code == 403 and "localhost addresses" in rebound.json()["detail"]


def test_cross_site_changes_are_refused(workspace):
    body = {"kind": "train", "config": train_config("csrf")}
    for token in (None, TOKEN):
        app = create_app(workspace, token=token, run_jobs=False)
        with TestClient(app, base_url=BASE) as client:
            if token:
                client.cookies.set(COOKIE, session_value(TOKEN))
            for headers in (
                {"Origin": "http://evil.example"},
                {"Origin": "null"},
                {"Sec-Fetch-Site": "cross-site"},
                {"Referer": "http://evil.example/page"},
            ):
                refused = client.post("/api/jobs", json=body, headers=headers)
                assert refused.status_code == 403, headers
                assert "cross-site request refused" in refused.json()["detail"]
            assert app.state.context.store.jobs() == []  # nothing was queued
            same = client.post(
                "/api/jobs", json=body, headers={"Origin": BASE, "Sec-Fetch-Site": "same-origin"}
            )
            assert same.status_code == 201, same.text
            job = same.json()["id"]
            assert client.post(f"/api/jobs/{job}/stop", headers={"Origin": BASE}).json()["state"] == "stopped"
            client.delete(f"/api/jobs/{job}")
        if token:  # a script's Bearer header cannot be sent cross-site by a browser: no Origin check
            with TestClient(app, base_url=BASE) as client:
                bearer = {"Authorization": f"Bearer {TOKEN}", "Origin": "http://evil.example"}
                assert client.get("/api/jobs", headers=bearer).status_code == 200


TRAVERSALS = [
    "/api/files/%2e%2e/outside/secret.txt",
    "/api/files/%2e%2e%2foutside%2fsecret.txt",
    "/api/files/..%2f..%2foutside/secret.txt",
    "/api/files/%252e%252e/outside/secret.txt",
    "/api/files/datasets/%2e%2e/%2e%2e/outside/secret.txt",
    "/api/files/datasets/star/.%2E/.%2E/.%2e/outside/secret.txt",
    "/api/files/%2F" + "etc/passwd",
    "/api/files/~/.bashrc",
    "/api/files/datasets/link/secret.txt",
    "/api/files/models/passwd.safetensors",
    "/api/files/..%5c..%5coutside%5csecret.txt",
    "/api/files/C:%5cWindows%5cwin.ini",
    "/api/files/C:/Windows/win.ini",
    "/api/files/%5c%5cserver%5cshare%5csecret.txt",
    "/api/files/settings.toml%00.png",
    "/api/files/%c0%ae%c0%ae/outside/secret.txt",
    "/api/files/@nope/secret.txt",
    "/api/files/@extra/%2e%2e/outside/secret.txt",
    "/api/browse?location=datasets/link",
    "/api/dataset?location=../outside",
    "/api/dataset/check?location=/etc",
    "/api/dataset/check?location=datasets/evil.toml",
    "/api/model/report?location=models/passwd.safetensors",
    "/api/run?location=%2e%2e",
]


def test_path_traversal_is_refused_and_nothing_is_read(api):
    for url in TRAVERSALS:
        response = api.get(url)
        assert response.status_code == 403, (url, response.status_code, response.text)
        assert "refused" in response.json()["detail"], url
        assert SECRET not in response.text
    listing = api.get("/api/browse?location=datasets").json()
    assert "link" not in [e["name"] for e in listing["entries"]]  # a link outside is not listed
    assert api.get("/api/files/@extra/note.txt").text == "allowed folder"


def test_paths_in_jobs_and_configs_stay_inside_the_roots(api, workspace):
    outside = (workspace.settings.allow["extra"].parent / "outside").as_posix()
    attempts = [
        {
            "kind": "resize",
            "args": {"lora": "../outside/secret.txt", "out": "models/x.safetensors", "new-rank": 4},
        },
        {
            "kind": "resize",
            "args": {"lora": f"{outside}/secret.txt", "out": "models/x.safetensors", "new-rank": 4},
        },
        {"kind": "merge", "args": {"lora": [f"{outside}/secret.txt:0.5"], "out": "models/m.safetensors"}},
        {"kind": "grid", "args": {"run": "runs/real", "out": "/tmp/grid-out"}},
        {"kind": "train", "config": train_config("t").replace("models/tiny", "../outside/tiny")},
        {"kind": "train", "config": train_config("t", extra=f'output_dir = "{outside}"\n')},
        {"kind": "train", "config": train_config("t", extra=f'sample_prompts = "{outside}/secret.txt"\n')},
        {"kind": "train", "config": train_config("t", extra='dataset_config = "datasets/evil.toml"\n')},
        {
            "kind": "train",
            "config": train_config(
                "t", extra=f'[[datasets]]\n[[datasets.subsets]]\nimage_dir = "{outside}"\n'
            ),
        },
    ]
    for body in attempts:
        response = api.post("/api/jobs", json=body)
        assert response.status_code == 403, (body, response.text)
        assert "refused" in response.json()["detail"]
    assert api.get("/api/jobs").json() == []


# -- jobs (no processes: run_jobs=False) ---------------------------------------------------------


def test_job_queue_endpoints(api, workspace):
    first = api.post("/api/jobs", json={"kind": "train", "config": train_config("q1")})
    assert first.status_code == 201, first.text
    job = first.json()
    assert (
        job["state"] == "queued"
        and job["output_dir"] == "runs/q1"
        and job["events"] == f"/api/jobs/{job['id']}/events"
    )
    assert job["config"].startswith('output_dir = "runs/q1"')  # the UI names the run's folder
    assert (workspace.job_dir(job["id"]) / "config.toml").read_text() == job["config"]
    assert job["command"][:2] == ["lorakit", "train"]
    second = api.post(
        "/api/jobs", json={"kind": "train", "config_location": "configs/real.toml", "name": "again"}
    )
    assert second.status_code == 409 and "already holds a training run" in second.json()["detail"]
    assert "real-2" in second.json()["detail"]  # the refusal suggests a free name
    collision = api.post("/api/jobs", json={"kind": "train", "config": train_config("q1")})
    assert collision.status_code == 409 and "output folder of job" in collision.json()["detail"]
    assert "'q1-2' (output_dir runs/q1-2)" in collision.json()["detail"]
    ids = [job["id"]] + [
        api.post("/api/jobs", json={"kind": "train", "config": train_config(n)}).json()["id"]
        for n in ("q2", "q3")
    ]
    assert [j["id"] for j in api.get("/api/jobs").json()] == ids
    assert [j["id"] for j in api.put("/api/queue", json={"order": [ids[2]]}).json()] == [
        ids[2],
        ids[0],
        ids[1],
    ]
    assert api.put("/api/queue", json={"order": [999]}).status_code == 409
    assert api.patch(f"/api/jobs/{ids[1]}", json={"priority": 5, "name": "urgent"}).json()["name"] == "urgent"
    assert [j["id"] for j in api.get("/api/jobs", params={"state": "queued"}).json()][0] == ids[1]
    assert api.get("/api/jobs", params={"state": "sleeping"}).status_code == 404
    assert api.delete(f"/api/jobs/{ids[0]}").status_code == 409  # still queued
    stopped = api.post(f"/api/jobs/{ids[0]}/stop").json()
    assert stopped["state"] == "stopped" and stopped["error"] == "cancelled before it started"
    assert api.post(f"/api/jobs/{ids[0]}/stop").status_code == 409
    control = api.post(f"/api/jobs/{ids[0]}/control", json={"action": "save"})
    assert control.status_code == 409 and "only a running training" in control.json()["detail"]
    resumed = api.post(f"/api/jobs/{ids[0]}/resume").json()
    assert resumed["state"] == "queued" and resumed["resume"] and resumed["resumes_from"] is None
    assert "--resume=auto" in resumed["command"]
    assert api.post(f"/api/jobs/{ids[0]}/resume").status_code == 409
    assert api.get(f"/api/jobs/{ids[0]}/log").json() == {"job": ids[0], "lines": []}
    assert api.get("/api/jobs/99999").status_code == 404
    api.post(f"/api/jobs/{ids[0]}/stop")
    assert api.delete(f"/api/jobs/{ids[0]}").status_code == 204
    assert api.get(f"/api/jobs/{ids[0]}").status_code == 404


def test_other_job_kinds_take_their_command_options_only(api):
    lora = "runs/real/real.safetensors"
    resize = api.post(
        "/api/jobs",
        json={"kind": "resize", "args": {"lora": lora, "out": "models/r4.safetensors", "new-rank": 4}},
    )
    assert resize.status_code == 201, resize.text
    command = resize.json()["command"]
    assert command[:3] == ["lorakit", "resize", api.app.state.context.workspace.root.as_posix() + "/" + lora]
    assert "--new-rank=4" in command and resize.json()["events"] is None
    assert resize.json()["output_dir"] == "models"
    assert api.get(f"/api/jobs/{resize.json()['id']}/events").status_code == 404
    bad = [
        (
            {
                "kind": "resize",
                "args": {"lora": lora, "out": "models/r.safetensors", "new-rank": "4; rm -rf /"},
            },
            "a number expected",
        ),
        (
            {
                "kind": "resize",
                "args": {"lora": lora, "out": "models/r.safetensors", "new-rank": 4, "shell": "x"},
            },
            "unknown option(s) shell",
        ),
        ({"kind": "resize", "args": {"lora": lora}}, "out, new-rank must be given"),
        (
            {"kind": "grid", "args": {"run": "runs/real", "x": "lora=/etc/*.safetensors"}},
            "lora axes name files",
        ),
        ({"kind": "generate", "args": {"out": "runs/g", "prompt": "a <lora:../../x:1>"}}, "not a path"),
        ({"kind": "rm", "args": {}}, "unknown job kind 'rm'"),
        ({"kind": "train", "config": "resolution = [1, 2"}, "is not valid TOML"),
        ({"kind": "train", "config": 'output_name = "x"\n'}, "sets no pretrained_model_name_or_path"),
        (
            {"kind": "train", "config": train_config("x", extra="learning_rat = 1\n")},
            "Did you mean 'learning_rate'",
        ),
        ({"kind": "train", "config": train_config("x"), "device": "cuda:0; reboot"}, "use a name like"),
    ]
    for body, message in bad:
        response = api.post("/api/jobs", json=body)
        assert response.status_code == 422, (body, response.text)
        assert message in response.json()["detail"], (message, response.json())
    grid = api.post("/api/jobs", json={"kind": "grid", "args": {"run": "runs/real", "weight": 0.5}}).json()
    assert grid["output_dir"] == "runs/real/grid" and "--weight=0.5" in grid["command"]


def test_hostile_requests_get_4xx_not_500(api):
    cases = [
        ("post", "/api/jobs", {"content": b"{not json", "headers": {"Content-Type": "application/json"}}),
        ("post", "/api/jobs", {"json": {"kind": 5}}),
        ("get", "/api/jobs/abc", {}),
        ("get", "/api/jobs/1/log?lines=999999999", {}),
        ("put", "/api/queue", {"json": {"order": "all"}}),
        ("get", "/api/dataset", {}),
        ("post", "/api/dataset/tags", {"json": {"location": "datasets/star", "action": "explode"}}),
        ("get", "/api/files/" + "a/" * 3000, {}),
        ("get", "/api/nothing-here", {}),
    ]
    for method, url, kwargs in cases:
        response = getattr(api, method)(url, **kwargs)
        assert 400 <= response.status_code < 500, (url, response.status_code)
        assert "Traceback" not in response.text


def test_job_events_history_and_stream(api, workspace):
    """A finished training's events from its run folder: history, SSE from an id, then 204."""
    job = api.app.state.context.store
    spec_job = api.post("/api/jobs", json={"kind": "train", "config": train_config("ev")}).json()
    run = workspace.root / "runs" / "ev"
    events_file = workspace.root / "runs" / "real" / "events.jsonl"
    run.mkdir(parents=True, exist_ok=True)
    (run / "events.jsonl").write_bytes(events_file.read_bytes())
    job.claim_next(1)
    job.finish(spec_job["id"], "done", 0, None, "")
    history = api.get(f"/api/jobs/{spec_job['id']}/events/history").json()
    assert [e["kind"] for e in history][0] == "plan" and history[-1]["kind"] == "end"
    steps = api.get(f"/api/jobs/{spec_job['id']}/events/history", params={"kind": "step", "after": 1}).json()
    assert [e["step"] for e in steps] == [1, 2]
    with api.stream("GET", f"/api/jobs/{spec_job['id']}/events", headers={"Last-Event-ID": "2"}) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        text = "".join(stream.iter_text())
    ids = [int(i) for i in re.findall(r"^id: (\d+)$", text, re.M)]
    assert ids == [e["id"] for e in history if e["id"] > 2]
    assert json.loads(re.findall(r"^data: (.*)$", text, re.M)[-1])["kind"] == "end"
    done = api.get(f"/api/jobs/{spec_job['id']}/events", headers={"Last-Event-ID": str(history[-1]["id"])})
    assert done.status_code == 204  # EventSource stops reconnecting


# -- the workspace -------------------------------------------------------------------------------


def test_info_settings_options_roots_and_browse(api, workspace):
    info = api.get("/api/info").json()
    assert info["workspace"] == str(workspace.root) and "train" in info["job_kinds"]
    assert info["token_required"] == ("Authorization" in api.headers)
    assert api.get("/api/settings").json()["allow"] == {"@extra": str(workspace.settings.allow["extra"])}
    names = [o["name"] for o in api.get("/api/options").json()["options"]]
    assert "network_dim" in names and "learning_rate" in names
    assert [r["prefix"] for r in api.get("/api/roots").json()] == ["", "@extra"]
    top = {e["name"] for e in api.get("/api/browse").json()["entries"]}
    assert {"datasets", "configs", "runs", "models", "jobs", "settings.toml", "lorakit.db"} <= top
    assert api.get("/api/files/settings.toml").headers["content-type"].startswith("text/plain")
    assert api.get("/api/files/runs").status_code == 404


def test_runs_and_models(api):
    runs = api.get("/api/runs").json()
    real = next(r for r in runs if r["name"] == "real")
    assert real["location"] == "runs/real" and real["status"] == "finished" and real["steps"] == 2
    detail = api.get("/api/run", params={"location": "runs/real"}).json()
    assert detail["files"] == ["runs/real/real.safetensors"] and detail["record"]["plan"]["total_steps"] == 2
    assert [e["file"] for e in detail["saved_epochs"]] == ["runs/real/real.safetensors"]
    events = api.get("/api/run/events", params={"location": "runs/real", "kind": "end"}).json()
    assert events[-1]["status"] == "finished"
    assert api.get("/api/run", params={"location": "datasets"}).status_code == 404
    models = {m["location"]: m["kind"] for m in api.get("/api/models").json()}
    assert (
        models["models/tiny.safetensors"] == "checkpoint" and models["runs/real/real.safetensors"] == "lora"
    )
    assert "models/passwd.safetensors" not in models  # a link outside
    report = api.get("/api/model/report", params={"location": "models/tiny.safetensors"}).json()
    assert report["family"].startswith("SD 1") and len(report["sha256"]) == 64
    assert (
        api.get("/api/files/runs/real/real.safetensors")
        .headers["content-disposition"]
        .startswith("attachment")
    )


def test_dataset_listing_check_and_tag_edits(api, workspace):
    assert [d["name"] for d in api.get("/api/datasets").json()] == [
        "star"
    ]  # the link outside is not a dataset
    listing = api.get("/api/dataset", params={"location": "datasets/star"}).json()
    assert listing["caption_extension"] == ".txt" and len(listing["images"]) == 2
    first = listing["images"][0]
    assert first["subset"] == "train/1_sks star" and first["tags"][0] == "sks"
    where = {"location": "datasets/star/train", "resolution": "64"}
    # sd-scripts' default caption_extension is .caption: .txt captions stop it, with the fix named
    unset = api.get("/api/dataset/check", params=where).json()
    assert not unset["ready"] and "caption_extension" in unset["text"] and ".txt" in unset["text"]
    # the Datasets page sends the extension the listing found, as here
    check = api.get("/api/dataset/check", params={**where, "caption_extension": ".txt"}).json()
    assert check["ready"] and check["train_images"] == 2 and "steps per epoch" in check["text"]
    stats = api.get("/api/dataset/tags", params={"location": "datasets/star"}).json()
    assert {"tag": "sks", "count": 2} in stats["tags"]
    # add a trigger word to one picture only, then undo it
    edit = api.post(
        "/api/dataset/tags",
        json={"location": "datasets/star", "action": "add", "tags": ["ohwx"], "files": [first["location"]]},
    ).json()
    assert [c["location"] for c in edit["changed"]] == [first["caption_location"]]
    caption = workspace.root / first["caption_location"]
    assert caption.read_text().startswith("ohwx, sks") and edit["backup"].startswith(
        "datasets/star/.lorakit-backup/"
    )
    other = workspace.root / listing["images"][1]["caption_location"]
    assert not other.read_text().startswith("ohwx")
    dry = api.post(
        "/api/dataset/tags",
        json={"location": "datasets/star", "action": "remove", "tags": ["sks"], "dry_run": True},
    ).json()
    assert len(dry["changed"]) == 2 and dry["backup"] is None and "sks" in other.read_text()
    restored = api.post("/api/dataset/tags/restore", json={"location": "datasets/star"}).json()
    assert restored["restored"] == [first["caption_location"]] and caption.read_text().startswith("sks")
    assert api.get("/api/dataset/backups", params={"location": "datasets/star"}).json()
    # one caption, written inline (with a backup)
    written = api.put(
        "/api/dataset/caption", json={"location": first["location"], "text": "sks, star"}
    ).json()
    assert caption.read_text() == "sks, star\n" and written["backup"]
    assert api.put("/api/dataset/caption", json={"location": "settings.toml", "text": "x"}).status_code == 422


def test_upload_pictures_and_captions(api, workspace):
    picture = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(picture, format="PNG")
    files = [
        ("files", ("red.png", picture.getvalue(), "image/png")),
        ("files", ("red.txt", b"red", "text/plain")),
    ]
    saved = api.post("/api/dataset/upload", data={"location": "datasets/new/1_red"}, files=files)
    assert saved.status_code == 200, saved.text
    assert saved.json()["saved"] == ["datasets/new/1_red/red.png", "datasets/new/1_red/red.txt"]
    again = api.post("/api/dataset/upload", data={"location": "datasets/new/1_red"}, files=files[:1])
    assert again.status_code == 409 and "replace=true" in again.json()["detail"]
    page = api.post(
        "/api/dataset/upload",
        data={"location": "datasets/new"},
        files=[("files", ("x.html", b"<script>", "text/html"))],
    )
    assert page.status_code == 422 and "only pictures" in page.json()["detail"]
    sneaky = api.post(
        "/api/dataset/upload",
        data={"location": "datasets/new"},
        files=[("files", ("../../up.png", picture.getvalue(), "image/png"))],
    )
    assert sneaky.json()["saved"] == ["datasets/new/up.png"]  # the name only, never its folders
    outside = api.post("/api/dataset/upload", data={"location": "../elsewhere"}, files=files[:1])
    assert outside.status_code == 403
    assert (workspace.root / "datasets" / "new" / "1_red" / "red.png").is_file()


def test_configs_save_list_and_check(api):
    saved = api.put("/api/config", json={"location": "configs/mine.toml", "text": train_config("mine")})
    assert saved.status_code == 200 and saved.json() == {"location": "configs/mine.toml"}
    assert "configs/mine.toml" in [c["location"] for c in api.get("/api/configs").json()]
    assert (
        api.put("/api/config", json={"location": "configs/bad.toml", "text": "network_dim = = 4"}).status_code
        == 422
    )
    assert api.put("/api/config", json={"location": "configs/x.py", "text": ""}).status_code == 422
    check = api.post("/api/config/check", json={"config": train_config("checked")}).json()
    assert check["output_dir"] == "runs/checked" and "network_dim = 4" in check["resolved"]
    assert api.get("/api/jobs").json() == []  # a check queues nothing


def test_literal_dot_dot_and_links_are_refused_before_any_read(workspace):
    """Clients like curl --path-as-is send '..' unnormalised; the resolver refuses it itself."""
    from lorakit.web.errors import Refused
    from lorakit.web.security import location_of, resolve_location, resolve_user_path

    roots = workspace.roots()
    for bad in ("../outside/secret.txt", "datasets/../../outside", "datasets/link/secret.txt", "/etc/passwd"):
        with pytest.raises(Refused, match="refused"):
            resolve_location(bad, roots)
    assert resolve_location("datasets/star", roots) == workspace.root / "datasets" / "star"
    assert resolve_user_path(str(workspace.root / "models"), roots) == workspace.root / "models"
    assert location_of(workspace.settings.allow["extra"] / "note.txt", roots) == "@extra/note.txt"


def test_ui_help_explains_every_option(capsys):
    from lorakit.cli.main import main

    with pytest.raises(SystemExit):
        main(["ui", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for option in ("--workspace DIR", "--host HOST", "--port N", "--token T"):
        assert option in text, option
    assert "Default 127.0.0.1: only this computer can connect" in text
    assert "requires a token" in text and "LORAKIT_UI_TOKEN" in text
