"""The `tag` and `caption` job kinds of the web UI: the argument lists they build, what they
refuse (unknown or mistyped options, paths outside the roots, models that are neither a folder
inside nor a name or repo id), the list of known models, and one real tag job run by a
`lorakit ui` process with a tiny ONNX tagger (tag files on disk), next to a job whose hub model
is not on this offline machine (its error names the files to fetch)."""

from pathlib import Path

import pytest
from PIL import Image
from tagging_helpers import constant_tagger
from training_helpers import make_folder_dataset
from web_helpers import Server, api_client, kill_tree_of, wait_state

from lorakit.web.workspace import Workspace

TOKEN = "tagging-token-0123456789"
LABELS = [
    ("general", "rating", 0.9),
    ("sensitive", "rating", 0.1),
    ("1girl", "general", 0.8),
    ("long_hair", "general", 0.6),
    ("watermark", "general", 0.7),
    ("faint", "general", 0.2),
    ("hero_(series)", "character", 0.9),
]


@pytest.fixture
def workspace(tmp_path) -> Workspace:
    """A dataset (datasets/star/train/1_sks star, 2 pictures), a tiny tagger in models/tagger,
    an allowed folder, and links that lead outside."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "extra").mkdir()
    ws = Workspace.open(tmp_path / "ws")
    (ws.root / "settings.toml").write_text(f'[allow]\nextra = "{(tmp_path / "extra").as_posix()}"\n')
    ws = Workspace.open(ws.root)
    make_folder_dataset(ws.root / "datasets" / "star", images=2)
    constant_tagger(ws.root / "models" / "tagger", LABELS)
    (ws.root / "datasets" / "link").symlink_to(outside, target_is_directory=True)
    return ws


@pytest.fixture(params=[None, TOKEN], ids=["no-token", "token"])
def api(request, workspace):
    with api_client(workspace, request.param) as client:
        yield client


def submit(api, kind: str, args: dict):
    return api.post("/api/jobs", json={"kind": kind, "args": args})


def test_a_tag_job_runs_lorakit_tag_with_the_options_given(api, workspace):
    root = workspace.root.as_posix()
    job = submit(
        api,
        "tag",
        {
            "folder": "datasets/star",
            "model": "models/tagger",
            "thresh": 0.5,
            "character_threshold": 0.85,
            "always_first_tags": "sks",
            "undesired_tags": "watermark, signature",
            "caption_extension": "txt",
            "append_tags": True,
            "recursive": True,
            "remove_underscore": False,
            "batch_size": 4,
            "model_dir": "@extra",
            "dry-run": None,
        },
    )
    assert job.status_code == 201, job.text
    view = job.json()
    assert view["command"] == [
        "lorakit",
        "tag",
        f"{root}/datasets/star",
        f"--model={root}/models/tagger",
        "--thresh=0.5",
        "--character_threshold=0.85",
        "--always_first_tags=sks",
        "--undesired_tags=watermark, signature",
        "--caption_extension=.txt",
        "--append_tags",
        "--recursive",
        "--batch_size=4",
        f"--model_dir={workspace.settings.allow['extra'].as_posix()}",
    ]  # false and empty options are left out; the folder first, every value in one argument
    assert view["kind"] == "tag" and view["name"] == "tag datasets/star"
    assert view["output_dir"] == "datasets/star" and view["events"] is None
    # a known name and hub repo ids go to the command as written: it finds or fetches the files
    for model in ("wd-vit-tagger-v3", "SmilingWolf/wd-vit-tagger-v3", "cella110n/cl_tagger/cl_tagger_1_02"):
        command = submit(api, "tag", {"folder": "datasets/star", "model": model}).json()["command"]
        assert command[3:] == [f"--model={model}"], command


def test_a_caption_job_runs_lorakit_caption_with_the_options_given(api, workspace):
    root = workspace.root.as_posix()
    view = submit(
        api,
        "caption",
        {
            "folder": "datasets/star/train/1_sks star",
            "model": "florence-2-base",
            "prefix": "sks star,",
            "suffix": "--no-such-option",
            "task": "<DETAILED_CAPTION>",
            "beam_search": True,
            "num_beams": 3,
            "max_length": 40,
            "caption_extension": ".caption",
            "device": "cpu",
            "seed": 1,
        },
    ).json()
    assert view["command"] == [
        "lorakit",
        "caption",
        f"{root}/datasets/star/train/1_sks star",
        "--model=florence-2-base",
        "--prefix=sks star,",
        "--suffix=--no-such-option",  # one argument: a value is never read as an option
        "--task=<DETAILED_CAPTION>",
        "--beam_search",
        "--num_beams=3",
        "--max_length=40",
        "--caption_extension=.caption",
        "--device=cpu",
        "--seed=1",
    ]
    sampled = submit(api, "caption", {"folder": "datasets/star", "sample": True, "top_p": 0.8}).json()
    assert sampled["command"][3:] == ["--sample", "--top_p=0.8"]


def test_wrong_options_are_refused_with_the_reason(api, workspace):
    star = "datasets/star"
    (workspace.root / "models" / "file.onnx").write_bytes(b"x")
    bad = [
        ("tag", {"folder": star, "shell": "rm -rf /"}, "unknown option(s) shell"),
        ("tag", {"folder": star, "prefix": "sks"}, "unknown option(s) prefix"),  # caption's, not tag's
        ("caption", {"folder": star, "thresh": 0.3}, "unknown option(s) thresh"),
        ("tag", {}, "folder must be given"),
        ("tag", {"folder": star, "thresh": "0.35; reboot"}, "a number expected"),
        ("tag", {"folder": star, "thresh": -0.1}, "out of range"),
        ("tag", {"folder": star, "batch_size": 0}, "out of range"),
        ("tag", {"folder": star, "batch_size": 1.5}, "a number expected (int)"),
        ("tag", {"folder": star, "recursive": "yes"}, "true or false expected"),
        ("tag", {"folder": star, "undesired_tags": ["a", "b"]}, "one value expected"),
        ("tag", {"folder": star, "device": "gpu"}, "'gpu' is not one of auto, cpu, cuda"),
        ("tag", {"folder": star, "caption_extension": "../../x"}, "is not a file extension"),
        ("tag", {"folder": star, "caption_extension": ".t/xt"}, "is not a file extension"),
        ("tag", {"folder": "datasets/none"}, "does not exist"),
        ("tag", {"folder": "models/file.onnx"}, "is a file; give a folder"),
        ("tag", {"folder": star, "model": "models/nothing-here"}, "does not exist"),
        ("tag", {"folder": star, "model": "models/file.onnx"}, "give the folder that holds"),
        ("tag", {"folder": star, "model": "not a model!"}, "is not a model"),
        ("tag", {"folder": star, "model": "owner/../name"}, "is not a model"),
        ("caption", {"folder": star, "top_p": 1.5}, "out of range"),
        ("caption", {"folder": star, "task": "<OCR>"}, "is not one of <CAPTION>"),
        ("caption", {"folder": star, "beam_search": True, "sample": True}, "exclude each other"),
        ("caption", {"folder": star, "prompt": "a\x00b"}, "NUL bytes"),
    ]
    for kind, args, message in bad:
        response = submit(api, kind, args)
        assert response.status_code == 422, (kind, args, response.text)
        assert message in response.json()["detail"], (message, response.json())
    assert api.get("/api/jobs").json() == []


def test_paths_outside_the_roots_are_refused(api, workspace):
    outside = (workspace.root.parent / "outside").as_posix()
    attempts = [
        ("tag", {"folder": "../outside"}),
        ("tag", {"folder": outside}),
        ("tag", {"folder": "datasets/link"}),  # a link that leads outside
        ("tag", {"folder": "@nope/x"}),
        ("caption", {"folder": "datasets/%2e%2e/%2e%2e/outside"}),
        ("tag", {"folder": "datasets/star", "model": outside}),
        ("tag", {"folder": "datasets/star", "model": "../outside"}),
        ("tag", {"folder": "datasets/star", "model": "~/.cache/lorakit/models/x"}),
        ("caption", {"folder": "datasets/star", "model": "/etc"}),
        ("tag", {"folder": "datasets/star", "model_dir": outside}),
        ("tag", {"folder": "datasets/star", "output_path": f"{outside}/meta.json"}),
    ]
    for kind, args in attempts:
        response = submit(api, kind, args)
        assert response.status_code == 403, (args, response.text)
        assert "refused" in response.json()["detail"]
    assert api.get("/api/jobs").json() == []


def test_the_forms_list_the_known_taggers_and_captioners(api):
    models = api.get("/api/dataset/models").json()
    defaults = {m["kind"]: m["name"] for m in models if m["default"]}
    assert defaults == {"tagger": "wd-v1-4-convnext-tagger-v2", "captioner": "blip-large"}
    blip = next(m for m in models if m["name"] == "blip-large")
    assert blip["repo_id"] == "Salesforce/blip-image-captioning-large" and blip["licence"] == "BSD-3-Clause"
    assert {m["family"] for m in models} >= {"wd14", "blip", "florence2", "git"}
    info = api.get("/api/info").json()["job_kinds"]
    assert "always_first_tags" in info["tag"] and "prefix" in info["caption"]


def test_a_tag_job_writes_the_tag_files(tmp_path):
    """A real server and job process: the tiny tagger tags a kohya folder (the old captions are
    backed up); a hub model that is not on this offline machine (the tests run with
    HF_HUB_OFFLINE=1) fails with the files to fetch and where to put them."""
    ws = Workspace.open(tmp_path / "ws")
    train = make_folder_dataset(ws.root / "datasets" / "star", images=2)
    Image.new("RGB", (24, 24), "blue").save(train / "1_sks star" / "new.png")  # no caption yet
    constant_tagger(ws.root / "models" / "tagger", LABELS)
    folder = train / "1_sks star"
    with Server(ws.root) as server, server.client() as api:
        try:
            job = submit(
                api,
                "tag",
                {
                    "folder": "datasets/star",
                    "model": "models/tagger",
                    "recursive": True,
                    "always_first_tags": "sks",
                    "undesired_tags": "watermark",
                    "remove_underscore": True,
                },
            ).json()
            missing = api.post(
                "/api/jobs",
                json={
                    "kind": "tag",
                    "args": {
                        "folder": "datasets/star",
                        "model": "someone/missing-tagger",
                        "model_dir": "models",
                    },
                    "device": "cpu",  # another device: it runs beside the first
                },
            ).json()
            done = wait_state(api, job["id"], ("done", "failed", "interrupted"), timeout=240)
            failed = wait_state(api, missing["id"], ("done", "failed", "interrupted"), timeout=240)
        finally:
            for j in (1, 2):
                kill_tree_of(ws.root, j)
    assert done["state"] == "done", done["log_tail"]
    expected = "sks, 1girl, long hair, hero (series)\n"  # 0.35 threshold, trigger word first
    assert {p.name: p.read_text() for p in sorted(folder.glob("*.txt"))} == {
        "0.txt": expected,
        "1.txt": expected,
        "new.txt": expected,
    }
    backups = list((ws.root / "datasets" / "star" / ".lorakit-backup").iterdir())
    saved = {p.name: p.read_text() for p in backups[0].rglob("?.txt")}
    assert len(backups) == 1 and saved == {
        f"{i}.txt": f"sks, magenta circle {i}, white background" for i in (0, 1)
    }  # the old captions, for `lorakit tags restore`
    assert any("tagged 3 image(s)" in line for line in done["log_tail"])
    assert failed["state"] == "failed" and failed["exit_code"] == 2
    error = failed["error"]
    assert "offline" in error and "model.onnx and selected_tags.csv" in error, error
    assert str(Path(ws.root) / "models" / "someone_missing-tagger") in error
