"""The API the pages add: presets, the live plan, TOML import, prompt files, thumbnails, bucket
preview, new datasets, run notes and stars, run comparison, a run's grid, "keep this epoch", the
static files; and the Chinese catalogues (every UI string, every option's help, the presets)."""

import fnmatch
import json
import re
from pathlib import Path

import pytest
from PIL import Image
from web_helpers import api_client, copy_workspace, make_workspace, train_config

from lorakit.training.config import load_config, read_toml
from lorakit.training.options import BY_NAME, OPTIONS, check_value
from lorakit.training.plan import check_settings, plan_steps
from lorakit.training.recipe import train
from lorakit.web import form, presets
from lorakit.web.pages import STATIC
from lorakit.web.planning import optimizer_notes

BASE = "http://127.0.0.1:7860"
TOKEN = "pages-token-0123456789"
CATALOGUE = json.loads((STATIC / "i18n" / "zh-CN.json").read_text(encoding="utf-8"))
RUN_EXTRA = "save_every_n_epochs = 1\nvalidation_split = 0.5\nvalidation_seed = 3\n"


@pytest.fixture(scope="module")
def base_workspace(tmp_path_factory, tiny_checkpoints):
    """The tiny model, a 2-picture dataset and two finished runs (dim 4 and dim 8, 2 epochs)."""
    ws = make_workspace(tmp_path_factory.mktemp("pages") / "ws", tiny_checkpoints["sd1"])
    for name, dim in (("d4", 4), ("d8", 8)):
        config = ws.root / "configs" / f"{name}.toml"
        text = train_config(
            name, epochs=2, extra=RUN_EXTRA + f'output_dir = "{(ws.root / "runs" / name).as_posix()}"\n'
        )
        text = text.replace(
            "network_dim = 4\nnetwork_alpha = 4", f"network_dim = {dim}\nnetwork_alpha = {dim}"
        )
        config.write_text(
            text.replace('"models/', f'"{ws.root.as_posix()}/models/').replace(
                '"datasets/', f'"{ws.root.as_posix()}/datasets/'
            )
        )
        train(load_config(config), quiet=True)
    return ws.root


@pytest.fixture
def workspace(base_workspace, tmp_path):
    """A fresh copy for each test; run.json names its files by absolute path."""
    return copy_workspace(base_workspace, tmp_path / "ws", "runs/*/run.json")


@pytest.fixture(params=[None, TOKEN], ids=["no-token", "token"])
def api(request, workspace):
    with api_client(workspace, request.param, BASE) as client:
        yield client


# -- the catalogues ----------------------------------------------------------------------------


def code_strings() -> set[str]:
    """Every t("...") of the page scripts (t() takes literal strings only, so this is all)."""
    found = set()
    for path in (STATIC / "js").rglob("*.js"):
        for match in re.finditer(r'\bt\(\s*"((?:[^"\\]|\\.)*)"', path.read_text(encoding="utf-8")):
            found.add(json.loads(f'"{match[1]}"'))
    return found


def test_every_ui_string_has_its_chinese_and_no_translation_is_stale():
    strings = code_strings()
    assert len(strings) > 250
    assert sorted(strings - set(CATALOGUE["strings"])) == [], "add these to static/i18n/zh-CN.json"
    assert sorted(set(CATALOGUE["strings"]) - strings) == [], (
        "remove these from zh-CN.json: no page uses them"
    )
    for english, chinese in CATALOGUE["strings"].items():
        assert chinese.strip() and re.search(r"[\u4e00-\u9fff]", chinese), english
        assert set(re.findall(r"\{(\w+)\}", english)) == set(re.findall(r"\{(\w+)\}", chinese)), english


def test_every_option_has_help_in_english_and_chinese():
    assert form.missing_help() == {"en": [], "zh": [], "unknown": []}
    assert len(form.help_zh()) == len(OPTIONS)


def test_every_preset_value_is_a_valid_option_with_its_reason_in_both_languages():
    assert presets.preset_problems() == []
    all_presets = presets.presets()
    assert len(all_presets) == 3 * 2 * 3
    assert {(p["kind"], p["base"], p["memory"]) for p in all_presets} == {
        (k, b, m) for k in ("character", "style", "concept") for b in ("sd15", "sdxl") for m in (8, 12, 24)
    }
    xl = next(p for p in all_presets if p["id"] == "style-sdxl-24")["values"]
    assert xl["resolution"]["value"] == "1024" and xl["network_dim"]["value"] == 32  # kind wins over base
    assert xl["train_batch_size"]["value"] == 4  # memory wins over kind


def _matches(message: str) -> bool:
    return any(re.search(m["pattern"], message) for m in CATALOGUE["messages"])


def test_the_plan_warnings_and_optimizer_notes_are_translated(tiny_checkpoints, tmp_path):
    """Every warning `check_settings` can give (and the D-Adaptation note) matches a pattern of
    the Chinese catalogue, so the form shows them in Chinese."""
    toml = tmp_path / "c.toml"
    toml.write_text(
        'network_dim = 4\nnetwork_alpha = 8\nlearning_rate = 0.05\nmixed_precision = "fp16"\n'
        "network_train_unet_only = true\nnetwork_train_text_encoder_only = true\nclip_skip = 2\n"
        "cache_latents = true\ncolor_aug = true\nmax_train_epochs = 3\n"
    )
    config = load_config(toml)
    plan = plan_steps(5000, 5000, 1, 1600, 3)
    warnings = check_settings(config, plan, True, 10, [])
    assert len(warnings) == 8
    toml.write_text(
        'optimizer_type = "DAdaptation"\nlearning_rate = 1e-4\nunet_lr = 1e-4\ntext_encoder_lr = 5e-5\n'
    )
    notes = optimizer_notes(load_config(toml))
    assert len(notes) == 2  # a small lr, and one rate for all groups
    for message in warnings + notes:
        assert _matches(message), f"no Chinese pattern for: {message}"


# -- the training form ---------------------------------------------------------------------------


def test_options_carry_chinese_help_common_flags_and_choices(api):
    table = api.get("/api/options").json()
    rows = {o["name"]: o for o in table["options"]}
    assert set(rows) == set(BY_NAME)
    assert rows["network_dim"]["help"] == BY_NAME["network_dim"].help
    assert "秩" in rows["network_dim"]["help_zh"]
    assert rows["network_dim"]["common"] and not rows["huber_c"]["common"]
    assert rows["mixed_precision"]["choices"] == ["no", "fp16", "bf16"]
    assert "AdamW8bit" in rows["optimizer_type"]["suggestions"]
    assert [p["id"] for p in api.get("/api/presets").json()][0] == "character-sd15-8"


def test_the_form_offers_every_training_method_with_its_options_in_both_languages(api):
    """The method is one select of the form, made from the option table like every other option
    (issue 21); each method's own options are in its section, with help in English and Chinese."""
    table = api.get("/api/options").json()
    rows = {o["name"]: o for o in table["options"]}
    method = rows["training_type"]
    assert method["choices"] == ["lora", "dreambooth", "textual_inversion", "hypernetwork"]
    assert method["common"] and method["default"] == "lora" and "method" in table["sections"]
    assert (
        "dreambooth" in method["help"] and "dreambooth" in method["help_zh"] and "训练" in method["help_zh"]
    )
    own = [o for o in table["options"] if o["section"] == "method"]
    names = {o["name"] for o in own}
    assert {
        "token_string",
        "init_word",
        "class_prompt",
        "train_embeddings",
        "hypernetwork_layer_structure",
    } <= names
    for o in own:
        assert o["help"].strip() and re.search(r"[\u4e00-\u9fff]", o["help_zh"]), o["name"]
    assert rows["hypernetwork_activation_func"]["choices"][:2] == ["linear", "relu"]
    assert "diffusers" in rows["save_model_as"]["choices"]  # DreamBooth's other layout


def test_plan_gives_steps_per_folder_the_total_and_the_cli_warnings(api):
    config = train_config("p", epochs=3).replace("network_alpha = 4", "network_alpha = 16")
    plan = api.post("/api/config/plan", json={"config": config}).json()
    subsets = plan["datasets"][0]["subsets"]
    assert [(s["location"], s["images"], s["num_repeats"]) for s in subsets] == [
        ("datasets/star/train/1_sks star", 2, 1)
    ]
    assert plan["total_steps"] == 6 and plan["epochs"] == 3 and plan["model"]["family"]
    assert any("network_alpha (16) is larger than network_dim (4)" in w for w in plan["warnings"])
    # repeats changed in the form: the folders as [[datasets]] with their repeats
    inline = config.replace('train_data_dir = "datasets/star/train"\n', "") + (
        '\n[[datasets]]\n[[datasets.subsets]]\nimage_dir = "datasets/star/train/1_sks star"\nnum_repeats = 5\n'
    )
    assert api.post("/api/config/plan", json={"config": inline}).json()["total_steps"] == 30
    # an unfinished form: problems, not an error
    empty = api.post("/api/config/plan", json={"config": ""}).json()
    assert [p["level"] for p in empty["problems"]] == ["error", "error"] and empty["total_steps"] == 1600
    # paths outside the roots are refused, bad values named
    outside = api.post("/api/config/plan", json={"config": 'train_data_dir = "/etc"\n'})
    assert outside.status_code == 403
    bad = api.post("/api/config/plan", json={"config": "network_dim = 0\n"})
    assert bad.status_code == 422 and "network_dim" in bad.json()["detail"]


def test_import_reads_sd_scripts_and_lora_scripts_tomls(api):
    lora_scripts = (
        '[model_arguments]\npretrained_model_name_or_path = "models/tiny.safetensors"\n'
        "[additional_network_arguments]\nnetwork_dim = 32\nnetwork_alpha = 16\n"
        "[optimizer_arguments]\nlearning_rate = 1e-4\n[others]\nxformers = true\n"
    )
    read = api.post("/api/config/import", json={"config": lora_scripts}).json()
    assert read["values"] == {
        "pretrained_model_name_or_path": "models/tiny.safetensors",
        "network_dim": 32,
        "network_alpha": 16.0,
        "learning_rate": 1e-4,
    }
    assert "xformers" in read["ignored"] and read["datasets"] is None
    typo = api.post("/api/config/import", json={"config": "network_dimm = 4\n"})
    assert typo.status_code == 422 and "network_dim" in typo.json()["detail"]


def test_prompt_files_are_checked_and_written(api, workspace):
    saved = api.put(
        "/api/prompts", json={"location": "configs/p.txt", "text": "# previews\nohwx --d 1 --s 8\n"}
    )
    assert saved.json() == {"location": "configs/p.txt", "prompts": 1}
    assert (workspace.root / "configs" / "p.txt").read_text() == "# previews\nohwx --d 1 --s 8\n"
    assert api.put("/api/prompts", json={"location": "configs/p.toml", "text": "x"}).status_code == 422
    assert (
        api.put("/api/prompts", json={"location": "configs/e.txt", "text": "# nothing\n"}).status_code == 422
    )
    assert api.put("/api/prompts", json={"location": "../p.txt", "text": "x"}).status_code == 403


# -- datasets ------------------------------------------------------------------------------------


def test_new_dataset_folder_and_its_layout(api, workspace):
    made = api.post("/api/datasets", json={"name": "cat", "repeats": 3, "class_tokens": "ohwx cat"})
    assert made.status_code == 201
    assert made.json() == {"location": "datasets/cat", "upload_to": "datasets/cat/3_ohwx cat"}
    assert (workspace.root / "datasets" / "cat" / "3_ohwx cat").is_dir()
    assert (
        api.post("/api/datasets", json={"name": "cat", "repeats": 3, "class_tokens": "ohwx cat"}).status_code
        == 409
    )
    for name in ("../x", "a/b", ".hidden", ""):
        assert api.post("/api/datasets", json={"name": name, "class_tokens": "x"}).status_code == 422, name
    listed = {d["name"]: d for d in api.get("/api/datasets").json()}
    assert (listed["cat"]["train"], listed["cat"]["reg"]) == ("datasets/cat", None)
    assert listed["star"]["train"] == "datasets/star/train"  # the train/ layout of the demo


def test_thumbnails_are_cached_and_only_for_pictures_inside(api, workspace):
    first = api.get("/api/thumb", params={"location": "datasets/star/train/1_sks star/0.png", "size": 96})
    assert first.status_code == 200 and first.headers["content-type"] == "image/jpeg"
    assert first.headers["x-thumbnail-cache"] == "miss"
    again = api.get("/api/thumb", params={"location": "datasets/star/train/1_sks star/0.png", "size": 96})
    assert again.headers["x-thumbnail-cache"] == "hit" and again.content == first.content
    cached = list((workspace.root / ".lorakit-cache" / "thumbs").rglob("*.jpg"))
    assert len(cached) == 1 and Image.open(cached[0]).size == (64, 64)  # never enlarged
    assert api.get("/api/thumb", params={"location": "settings.toml"}).status_code == 404
    assert (
        api.get(
            "/api/thumb", params={"location": "datasets/star/train/1_sks star/0.png", "size": 7}
        ).status_code
        == 422
    )
    assert api.get("/api/thumb", params={"location": "../outside.png"}).status_code == 403
    broken = workspace.root / "datasets" / "star" / "broken.png"
    broken.write_bytes(b"not a png")
    assert api.get("/api/thumb", params={"location": "datasets/star/broken.png"}).status_code == 422


def test_bucket_preview_shows_each_pictures_bucket_and_cut(api, workspace):
    folder = workspace.root / "datasets" / "wide" / "1_x"
    folder.mkdir(parents=True)
    Image.new("RGB", (1024, 512)).save(folder / "wide.png")
    Image.new("RGB", (512, 512)).save(folder / "square.png")
    preview = api.get(
        "/api/dataset/buckets", params={"location": "datasets/wide", "resolution": "512"}
    ).json()
    rows = {Path(p["location"]).name: p for p in preview["pictures"]}
    assert rows["square.png"]["bucket"] == [512, 512] and rows["square.png"]["cut"] == 0
    wide = rows["wide.png"]
    assert wide["bucket"][0] > wide["bucket"][1] and 0 < wide["cut"] < 0.2
    assert wide["crop"][0] == (wide["resized"][0] - wide["bucket"][0]) // 2  # centred
    square = api.get(
        "/api/dataset/buckets", params={"location": "datasets/wide", "enable_bucket": False}
    ).json()
    wide = next(p for p in square["pictures"] if p["location"].endswith("wide.png"))
    assert wide["bucket"] == [512, 512] and wide["cut"] == 0.5


# -- runs ----------------------------------------------------------------------------------------


def test_run_list_has_parameters_losses_notes_and_stars(api, workspace):
    runs = {r["name"]: r for r in api.get("/api/runs").json()}
    d4 = runs["d4"]
    assert d4["parameters"]["network_dim"] == 4 and d4["base_model_name"] == "tiny.safetensors"
    assert d4["epochs"] == 2 and d4["final_loss"] > 0 and d4["best_validation_loss"] > 0
    assert (d4["notes"], d4["stars"]) == ("", 0)
    assert (
        api.put("/api/run/notes", json={"location": "runs/d4", "stars": 4, "notes": "good"}).json()["stars"]
        == 4
    )
    assert api.put("/api/run/notes", json={"location": "runs/d4", "notes": "better"}).json() == {
        "location": "runs/d4",
        "notes": "better",
        "stars": 4,
    }
    stored = json.loads((workspace.root / "run-notes.json").read_text())
    assert stored == {"runs/d4": {"notes": "better", "stars": 4}}
    assert api.put("/api/run/notes", json={"location": "runs/d4", "stars": 9}).status_code == 422
    assert api.put("/api/run/notes", json={"location": "datasets/star", "stars": 1}).status_code == 404


def test_compare_marks_the_differences(api):
    compared = api.get("/api/runs/compare", params=[("location", "runs/d4"), ("location", "runs/d8")]).json()
    rows = {p["name"]: p for p in compared["parameters"]}
    assert rows["network_dim"] == {"name": "network_dim", "values": [4, 8], "differs": True}
    assert not rows["learning_rate"]["differs"]
    assert "network_dim" in compared["differences"] and "seed" not in compared["differences"]
    assert [len(x) > 0 for x in compared["losses"]] == [True, True]
    assert api.get("/api/runs/compare", params={"location": "runs/d4"}).status_code == 422


def test_run_grid_rows_cells_and_keep_this_epoch(api, workspace):
    empty = api.get("/api/run/grid", params={"location": "runs/d4"}).json()
    assert [r["epoch"] for r in empty["rows"]] == [1, 2] and empty["grids"] == []
    assert sum(r["lowest"] for r in empty["rows"]) == 1
    grid = workspace.root / "runs" / "d4" / "grid"
    (grid / "cells").mkdir(parents=True)
    cells = [{"x": 0, "y": 0, "z": 0, "file": "cells/000.png", "seed": 1, "parameters": "ohwx\nSteps: 8"}]
    cells.append({"x": 1, "y": 0, "z": 0, "file": "../../../secret.png"})  # never shown
    (grid / "grid.json").write_text(json.dumps({"axes": {"x": {"labels": ["0.5", "1"]}}, "cells": cells}))
    shown = api.get("/api/run/grid", params={"location": "runs/d4"}).json()["grids"][0]
    assert [c["location"] for c in shown["cells"]] == ["runs/d4/grid/cells/000.png"]
    kept = api.post(
        "/api/run/keep", json={"location": "runs/d4", "epoch": 1, "target": "models/best.safetensors"}
    )
    assert kept.json()["location"] == "models/best.safetensors"
    copy = workspace.root / "models" / "best.safetensors"
    assert copy.read_bytes() == (workspace.root / "runs" / "d4" / "d4-000001.safetensors").read_bytes()
    record = json.loads((workspace.root / "runs" / "d4" / "run.json").read_text())
    assert record["kept"][0]["epoch"] == 1 and record["kept"][0]["copy"] == str(copy)
    again = api.post(
        "/api/run/keep", json={"location": "runs/d4", "epoch": 1, "target": "models/best.safetensors"}
    )
    assert again.status_code == 409
    assert (
        api.post(
            "/api/run/keep", json={"location": "runs/d4", "epoch": 7, "target": "models/x.safetensors"}
        ).status_code
        == 422
    )
    assert (
        api.post(
            "/api/run/keep", json={"location": "runs/d4", "epoch": 1, "target": "models/x.txt"}
        ).status_code
        == 422
    )
    assert (
        api.post(
            "/api/run/keep", json={"location": "runs/d4", "epoch": 1, "target": "../x.safetensors"}
        ).status_code
        == 403
    )
    record = workspace.root / "runs" / "d8" / "run.json"  # a run still training: its run.json is busy
    record.write_text(record.read_text().replace('"status": "finished"', '"status": "running"'))
    busy = api.post(
        "/api/run/keep", json={"location": "runs/d8", "epoch": 1, "target": "models/y.safetensors"}
    )
    assert busy.status_code == 409 and not (workspace.root / "models" / "y.safetensors").exists()


def test_inspect_is_a_job_kind(api):
    job = api.post("/api/jobs", json={"kind": "inspect", "args": {"file": "models/tiny.safetensors"}}).json()
    assert job["command"][:2] == ["lorakit", "inspect"] and job["command"][2].endswith(
        "models/tiny.safetensors"
    )
    assert job["name"] == "inspect tiny.safetensors"
    assert api.post("/api/jobs", json={"kind": "inspect", "args": {}}).status_code == 422


# -- the pages' files ----------------------------------------------------------------------------


def test_pages_are_served_from_the_package_with_a_strict_policy(api):
    index = api.get("/")
    assert index.status_code == 200 and "/static/js/main.js" in index.text
    policy = index.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy and "http" not in policy
    script = api.get("/static/js/main.js")
    assert script.headers["content-type"].startswith("text/javascript")
    assert api.get("/static/i18n/zh-CN.json").json()["strings"]["Datasets"] == "数据集"
    for bad in (
        "/static/../app.py",
        "/static/%2e%2e/app.py",
        "/static/.hidden.js",
        "/static/js/",
        "/static/presets.toml",
    ):
        assert api.get(bad).status_code == 404, bad
    # nothing is fetched from elsewhere: no URL with a host in any page file (the SVG namespace
    # is a name, not an address)
    for path in STATIC.rglob("*"):
        if path.suffix in (".js", ".css", ".html"):
            text = path.read_text(encoding="utf-8").replace("http://www.w3.org/2000/svg", "")
            assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}/", text), path


def test_hostile_requests_to_the_new_endpoints_get_4xx(api):
    cases = [
        ("post", "/api/config/plan", {"json": {"config": 5}}),
        ("post", "/api/config/plan", {"json": {"config": "[[[ not toml"}}),
        ("post", "/api/config/import", {"json": {}}),
        ("get", "/api/thumb", {"params": {"location": "a" * 5000}}),
        ("get", "/api/dataset/buckets", {"params": {"location": "datasets/nothing"}}),
        (
            "get",
            "/api/dataset/buckets",
            {"params": {"location": "datasets/star/train", "resolution": "huge"}},
        ),
        ("post", "/api/datasets", {"json": {"name": "x", "repeats": -1, "class_tokens": "y"}}),
        ("put", "/api/run/notes", {"json": {"location": "runs/d4", "stars": "many"}}),
        ("get", "/api/runs/compare", {"params": [("location", "runs/d4"), ("location", "runs/nothing")]}),
        ("get", "/api/run/grid", {"params": {"location": "runs"}}),
        (
            "post",
            "/api/run/keep",
            {"json": {"location": "runs/d4", "epoch": "one", "target": "models/a.safetensors"}},
        ),
    ]
    for method, url, kwargs in cases:
        response = getattr(api, method)(url, **kwargs)
        assert 400 <= response.status_code < 500, (url, kwargs, response.status_code, response.text)
        assert "Traceback" not in response.text


def test_option_values_of_the_form_round_trip_through_check_value():
    """The form sends what it parses; defaults of every option pass the option's own check."""
    for option in OPTIONS:
        if option.default is not None:
            check_value(option, option.default, "default")


def test_every_page_file_is_package_data():
    """An installed lorakit (not only a checkout) serves every page file."""
    root = STATIC.parents[1]  # src/lorakit
    patterns = read_toml(root.parents[1] / "pyproject.toml")["tool"]["setuptools"]["package-data"]["lorakit"]
    files = [p for p in (root / "web").rglob("*") if p.is_file() and p.suffix not in (".py", ".pyc")]
    assert len(files) > 15
    for path in files:
        rel = path.relative_to(root).as_posix()
        assert any(
            fnmatch.fnmatch(rel, pattern) and rel.count("/") == pattern.count("/") for pattern in patterns
        ), rel


def test_the_login_page_speaks_the_browsers_language(workspace):
    with api_client(workspace, None, BASE) as open_client:  # no token: login is a redirect
        assert open_client.get("/login", follow_redirects=False).status_code == 303
    app_client = api_client(workspace, TOKEN, BASE)
    with app_client as client:
        client.headers.pop("Authorization")
        chinese = client.get("/login", headers={"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.5"})
        assert '<html lang="zh-CN">' in chinese.text and "登录" in chinese.text
        wrong = client.post("/login", data={"token": "nope"}, headers={"Accept-Language": "zh-CN"})
        assert wrong.status_code == 401 and "token 不对" in wrong.text
        english = client.get("/login", headers={"Accept-Language": "en-GB,zh;q=0.8"})
        assert '<html lang="en">' in english.text and "Log in" in english.text
