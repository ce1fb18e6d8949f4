"""The pages in a real Chromium, on the shipped tiny model, walked as a user walks the routine:
a dataset from uploaded pictures, its check report, tag edits (captions on disk checked), a preset
and the step count, a training watched live, the run in Runs, a second run, the comparison, the
grid and "keep this epoch" (the file on disk checked), a tool job, an auto-tag job from the
Datasets page (tags on disk and in the tag table). Then every page in Chinese (the auto-tag and
caption forms too)
with no English left, on a desktop and a phone-width screen; and 2,000 pictures in the editor.

Screenshots of every page visited are written under each test's output folder (tmp_path/shots)."""

import json
import os
import shutil
import time
from pathlib import Path

import httpx
import pytest
from browser_helpers import (
    PHONE,
    Shots,
    check_accessibility,
    go,
    need_browser,
    open_browser,
    untranslated,
)
from PIL import Image
from tagging_helpers import constant_tagger
from web_helpers import Server, kill_tree_of, wait_for

from lorakit.quickstart import shapes
from lorakit.quickstart.demo import demo_pictures
from lorakit.quickstart.run import tiny_model_path

sync_playwright = need_browser()
PROMPT = "ohwx, magenta circle, white background --d 1 --l 5 --s 6"


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    """One `lorakit ui` process and one workspace for the module, with the shipped tiny model."""
    root = tmp_path_factory.mktemp("pages") / "ws"
    server = Server(root)
    (root / "models").mkdir(parents=True)
    shutil.copy(tiny_model_path(), root / "models" / "tiny.safetensors")
    server.start()
    with sync_playwright() as playwright:
        yield server, playwright, {}
    server.stop()
    for job in os.listdir(root / "jobs"):
        if job.isdigit():
            kill_tree_of(root, int(job))


def pictures(folder: Path) -> list[Path]:
    """Six demo pictures with captions that lack the trigger word and carry a stray tag, and one
    picture too small for the training size (the check report warns about it)."""
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i, (picture, _) in enumerate(demo_pictures()[:6]):
        shapes.draw(picture).save(folder / f"p{i}.png")
        (folder / f"p{i}.txt").write_text(
            f"magenta {picture.shape}, {picture.background} background, simple\n"
        )
        files += [folder / f"p{i}.png", folder / f"p{i}.txt"]
    Image.new("RGB", (12, 12), (220, 0, 220)).save(folder / "small.png")
    (folder / "small.txt").write_text("magenta square, white background, simple\n")
    return files + [folder / "small.png", folder / "small.txt"]


def captions(folder: Path) -> dict[str, str]:
    return {p.stem: p.read_text().strip() for p in sorted(folder.glob("*.txt"))}


def fill_training(page, base: str, name: str, dim: int) -> None:
    """The Train page as a user fills it: a preset, then the changes the tiny model needs."""
    go(page, base, "train?dataset=datasets%2Fmagenta", "#plan-total[data-steps]")
    page.select_option("#preset-kind", "character")
    page.select_option("#preset-base", "sd15")
    page.select_option("#preset-memory", "24")
    assert "network_dim = 16" in page.inner_text("#preset-values")
    page.click("#apply-preset")
    assert (
        page.input_value("#opt-network_dim") == "16" and page.input_value("#opt-caption_extension") == ".txt"
    )
    for option, value in {
        "resolution": "32",
        "learning_rate": "0.004",
        "max_train_epochs": "3",
        "train_batch_size": "2",
        "network_dim": str(dim),
        "network_alpha": str(dim),
        "validation_split": "0.2",
        "sample_every_n_epochs": "1",
        "output_name": name,
        "seed": "1",
    }.items():
        page.fill(f"#opt-{option}", value)
    page.uncheck("#opt-enable_bucket")
    page.click("#section-dataset details.advanced summary")  # bucket_reso_steps is an advanced option
    page.fill("#opt-bucket_reso_steps", "32")
    page.select_option("#opt-mixed_precision", "no")
    page.fill("#preview-prompts", PROMPT)


def steps_shown(page) -> int:
    return int(page.get_attribute("#plan-total", "data-steps"))


def watch(page, timeout: float = 240, sample_now: bool = False) -> list[dict]:
    """What the monitor shows, sampled until the job ends: chart points, job state, previews.
    With `sample_now`, "Sample now" is pressed once, early in the run."""
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sample_now and seen and 0 < seen[-1]["points"] < 20 and page.is_enabled("#sample-now"):
            page.click("#sample-now")
            sample_now = False
        seen.append(
            page.evaluate(
                """() => ({
                  points: Number((document.querySelector("#loss-chart svg") || {dataset: {}}).dataset.points || 0),
                  state: (document.querySelector("#job-state [data-state]") || {dataset: {}}).dataset.state,
                  previews: document.querySelectorAll("#previews img.preview").length,
                })"""
            )
        )
        if seen[-1]["state"] in ("done", "failed", "stopped", "interrupted"):
            return seen
        time.sleep(0.25)
    raise AssertionError(f"the training did not end in {timeout} s: {seen[-3:]}")


def job_done(server, name: str) -> dict:
    def done():
        with server.client() as api:
            jobs = [j for j in api.get("/api/jobs").json() if j["name"] == name]
        return jobs and jobs[0]["state"] not in ("queued", "running") and jobs[0]

    job = wait_for(done, timeout=240, every=0.5, what=f"job {name} to end")
    assert job["state"] == "done", job
    return job


def test_the_routine_in_english(ui, tmp_path):
    server, playwright, world = ui
    base, ws = server.url, server.workspace
    shot = Shots(tmp_path / "shots")
    browser = open_browser(playwright, tmp_path / "profile")
    page = browser.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))

    # -- a dataset from uploaded pictures
    go(page, base, "datasets", "#create-dataset")
    page.fill("#new-name", "magenta")
    page.fill("#new-class", "shape")
    page.fill("#new-repeats", "2")
    page.set_input_files("#new-files", [str(p) for p in pictures(tmp_path / "upload")])
    page.click("#create-dataset button[type=submit]")
    page.wait_for_selector("#pictures .picture >> nth=6")
    folder = ws / "datasets" / "magenta" / "2_shape"
    assert sorted(p.name for p in folder.glob("*.png")) == [
        "p0.png",
        "p1.png",
        "p2.png",
        "p3.png",
        "p4.png",
        "p5.png",
        "small.png",
    ]
    shot(page, "datasets")
    check_accessibility(page, "datasets")

    # -- the check report, each problem beside its picture
    page.click("#tab-check")
    page.fill("#check-resolution", "32")
    page.fill("#check-bucket_reso_steps", "32")  # the tiny model's pictures are 32x32
    page.uncheck("#check-enable_bucket")
    page.click("#run-check")
    page.wait_for_selector("#check-summary")
    assert "Ready to train" in page.inner_text("#check-report")
    assert "2_shape" in page.inner_text("#check-summary")
    problem = page.locator("#check-problems .problem", has_text="12x12 is enlarged")
    assert problem.locator("img").get_attribute("src").endswith("small.png")
    shot(page, "check-report")

    # -- the bucket preview
    page.click("#tab-buckets")
    page.wait_for_selector("#bucket-table tbody tr >> nth=6")
    assert page.locator("#bucket-table tbody tr").count() == 7
    shot(page, "buckets")

    # -- tags: pictures with "white background" lose "simple"; all get the trigger word first
    page.click("#tab-pictures")
    before = captions(folder)
    page.click('#tag-table tr[data-tag="white background"] button.with')
    white = {k for k, v in before.items() if "white background" in v}
    assert page.locator("#pictures .picture").count() == len(white) < 7
    page.click("#select-shown")
    page.fill("#edit-tags", "simple")
    page.click("#remove-tags")
    wait_for(
        lambda: all("simple" not in captions(folder)[k] for k in white), what="the tag to be removed on disk"
    )
    after = captions(folder)
    assert all(after[k] == before[k].replace(", simple", "") for k in white)
    assert all(after[k] == before[k] for k in set(before) - white)  # the others are untouched
    page.click("#filter-clear")
    page.click("#select-none")
    page.click("#select-shown")
    page.fill("#edit-tags", "ohwx")
    page.click("#add-front")
    wait_for(
        lambda: all(v.startswith("ohwx, ") for v in captions(folder).values()),
        what="the trigger word on disk",
    )
    assert all(captions(folder)[k] == "ohwx, " + after[k] for k in after)
    assert list((folder.parent / ".lorakit-backup").iterdir())  # every change was backed up
    page.click("#undo")  # puts the backup back ...
    wait_for(lambda: captions(folder) == after, what="undo on disk")
    page.click("#redo")  # ... and the same edit again
    wait_for(lambda: all(v.startswith("ohwx, ") for v in captions(folder).values()), what="redo on disk")
    card = page.locator('#pictures .picture[data-location$="small.png"]')
    card.locator(".edit-caption").click()
    card.locator("textarea").fill("ohwx, magenta square, tiny")
    card.locator("button[type=submit]").click()
    wait_for(
        lambda: captions(folder)["small"] == "ohwx, magenta square, tiny", what="the edited caption on disk"
    )
    page.wait_for_selector('#tag-table tr[data-tag="ohwx"]')
    shot(page, "tag-editor")

    # -- train: a preset, the step count following the repeats, then the queue
    fill_training(page, base, "magenta-d4", 4)
    wait_for(
        lambda: page.locator("#plan-subsets .subset-row").count() == 1,
        what="the dataset's folder in the plan",
    )
    twice = page.locator("#plan-subsets input.repeats")
    assert twice.input_value() == "2"
    wait_for(lambda: steps_shown(page) == 18, what="6 pictures x 2 repeats x 3 epochs / 2 = 18 steps")
    twice.fill("")
    twice.press_sequentially("10")  # typed key by key: the field keeps the focus
    assert twice.input_value() == "10" and steps_shown(page) == 90  # at once, as typed
    twice.fill("4")
    assert steps_shown(page) == 36
    wait_for(
        lambda: "36" in page.inner_text("#plan-total") and page.inner_text("#plan-exact"),
        what="the plan",
    )
    assert "6 pictures" in page.inner_text("#plan-subsets")
    shot(page, "train")
    check_accessibility(page, "train")
    page.click("#queue-training")
    page.wait_for_url("**/#/monitor?job=*")

    # -- the monitor while it runs
    seen = watch(page, sample_now=True)
    running = [s for s in seen if s["state"] == "running"]
    assert running and any(s["points"] > 0 for s in running), seen[-5:]
    counts = [s["points"] for s in running if s["points"]]
    assert counts[-1] > counts[0], "the loss chart gained no points while the training ran"
    assert any(s["previews"] for s in running), "no preview appeared while the training ran"
    assert seen[-1]["state"] == "done" and seen[-1]["points"] == 36
    page.wait_for_selector("#banners .banner.ok")
    assert page.locator("#loss-chart line.epoch").count() == 3
    assert page.locator("#loss-chart circle.validation").count() == 3
    labels = page.locator("#previews tr[data-label]").evaluate_all("rows => rows.map((r) => r.dataset.label)")
    assert labels[-3:] == ["e000001", "e000002", "e000003"] or sorted(labels)[-3:] == [
        "e000001",
        "e000002",
        "e000003",
    ]
    assert len(labels) == 4 and any(not label.startswith("e") for label in labels)  # "sample now": at a step
    world["monitor"] = shot(page, "monitor")
    check_accessibility(page, "monitor")

    # -- the run in Runs, a second run with another dim
    go(page, base, "runs", 'tr[data-run="runs/magenta-d4"]')
    assert "datasets/magenta" in page.inner_text(
        'tr[data-run="runs/magenta-d4"]'
    )  # from its queued [[datasets]]
    shot(page, "runs")
    fill_training(page, base, "magenta-d8", 8)
    wait_for(lambda: page.locator("#plan-subsets input.repeats").count(), what="the plan")
    page.fill("#plan-subsets input.repeats", "4")
    wait_for(lambda: steps_shown(page) == 36, what="the same steps")
    page.click("#queue-training")
    page.wait_for_url("**/#/monitor?job=*")
    go(page, base, "queue", "#jobs tr[data-job]")
    shot(page, "queue")
    check_accessibility(page, "queue")
    job_done(server, "magenta-d8")

    # -- stars and notes, then the comparison with the differing parameter highlighted
    go(page, base, "runs", 'tr[data-run="runs/magenta-d8"]')
    first = page.locator('tr[data-run="runs/magenta-d4"]')
    first.locator(".stars button").nth(3).click()
    first.locator("textarea").fill("trigger word works")
    first.locator("textarea").blur()
    notes = ws / "run-notes.json"
    wait_for(
        lambda: (
            notes.exists()
            and json.loads(notes.read_text())["runs/magenta-d4"]
            == {"notes": "trigger word works", "stars": 4}
        ),
        what="stars and notes on disk",
    )
    check_accessibility(page, "runs")
    first.locator("input[type=checkbox]").check()
    page.locator('tr[data-run="runs/magenta-d8"] input[type=checkbox]').check()
    page.click("#compare")
    page.wait_for_selector("#compare-table")
    dim_row = page.locator('#compare-table tr[data-option="network_dim"]')
    assert "differs" in dim_row.get_attribute("class")
    assert [c.strip() for c in dim_row.locator("td").all_inner_texts()][1:] == ["4", "8"]
    assert page.locator('#compare-table tr[data-option="learning_rate"]').count() == 0  # equal: hidden
    page.uncheck("#only-differences")
    assert "differs" not in (
        page.locator('#compare-table tr[data-option="learning_rate"]').get_attribute("class") or ""
    )
    page.check("#only-differences")
    assert page.locator("#compare-chart svg path.smooth").count() == 2
    assert page.locator("#compare-previews img").count() == 2
    world["compare"] = shot(page, "compare")
    check_accessibility(page, "compare")

    # -- the grid: render, enlarge a cell, keep an epoch
    go(page, base, "grid?run=runs%2Fmagenta-d4", "#render-grid")
    page.click("#render-grid")
    page.wait_for_selector("#grid-table", timeout=240_000)
    assert page.locator("#grid-table tbody tr").count() == 3
    assert page.locator("#grid-table button.cell").count() == 12
    assert page.locator("#grid-table #lowest-mark").count() == 1
    page.locator("#grid-table button.cell").nth(5).click()
    page.wait_for_selector("#cell-dialog[open]")
    assert "Steps: 6" in page.inner_text("#cell-parameters")
    shot(page, "grid-cell")
    page.click("#close-cell")
    check_accessibility(page, "grid")
    page.click('#grid-table tr[data-epoch="2"] button.keep')
    page.fill("#keep-target", "models/magenta-best.safetensors")
    page.click("#keep-confirm")
    kept = ws / "models" / "magenta-best.safetensors"
    wait_for(kept.exists, what="the kept file")
    assert kept.read_bytes() == (ws / "runs" / "magenta-d4" / "magenta-d4-000002.safetensors").read_bytes()
    record = ws / "runs" / "magenta-d4" / "run.json"  # written just after the copy
    wait_for(lambda: "kept" in json.loads(record.read_text()), what="the choice in run.json")
    assert [k["epoch"] for k in json.loads(record.read_text())["kept"]] == [2]
    page.wait_for_selector("#kept li")
    shot(page, "grid")

    # -- a tool job: inspect the kept LoRA
    go(page, base, "tools", "#tool-inspect")
    page.fill("#tool-inspect input", "models/magenta-best.safetensors")
    page.click("#tool-inspect button[type=submit]")
    page.wait_for_selector("#tool-inspect pre.log", timeout=120_000)
    assert "LoRA network" in page.inner_text("#tool-inspect pre.log")
    shot(page, "tools")
    check_accessibility(page, "tools")

    # -- auto-tag from the Datasets page: the form queues `lorakit tag`; when the job is done,
    # the new tag is in the files (kept tags, trigger word still first) and in the tag table
    constant_tagger(ws / "models" / "tagger", [("magenta_shape", "general", 0.9), ("faint", "general", 0.1)])
    tagged_before = captions(folder)
    go(page, base, "datasets?open=datasets%2Fmagenta", "#auto-tag")
    page.click("#auto-tag")
    form = page.locator("#tag-dialog")
    assert form.locator("[name=recursive]").is_checked()  # the pictures are in 2_shape
    assert form.locator("[name=thresh]").input_value() == "0.35"  # the command's default
    form.locator("[name=model]").fill("models/tagger")
    form.locator("[name=always_first_tags]").fill("ohwx")
    form.locator("[name=append_tags]").select_option("yes")
    shot(page, "auto-tag-form")
    page.click("#tag-submit")
    page.wait_for_selector("#describe-status [data-state]")
    assert not form.is_visible() and page.locator("#describe-status a[href='#/queue']").count() == 1
    page.wait_for_selector('#tag-table tr[data-tag="magenta_shape"]', timeout=120_000)
    assert captions(folder) == {k: v + ", magenta_shape" for k, v in tagged_before.items()}
    assert "7" in page.inner_text('#tag-table tr[data-tag="magenta_shape"] td.count')
    assert errors == []
    browser.close()
    world["walked"] = True


def ensure_runs(server):
    """The Chinese tour reads what the English walk made; run alone, it makes it through the API."""
    ws = server.workspace
    with server.client() as api:
        if not (ws / "datasets" / "magenta").exists():
            api.post("/api/datasets", json={"name": "magenta", "repeats": 2, "class_tokens": "shape"})
            files = [("files", (p.name, p.read_bytes())) for p in pictures(ws / "upload")]
            api.post("/api/dataset/upload", data={"location": "datasets/magenta/2_shape"}, files=files)
        for name, dim in (("magenta-d4", 4), ("magenta-d8", 8)):
            if (ws / "runs" / name / "run.json").exists():
                continue
            prompts = ws / "configs" / "p.txt"
            prompts.write_text(PROMPT + "\n")
            config = (
                'pretrained_model_name_or_path = "models/tiny.safetensors"\ntrain_data_dir = "datasets/magenta"\n'
                'caption_extension = ".txt"\nresolution = "32"\nbucket_reso_steps = 32\nlearning_rate = 0.004\nmax_train_epochs = 2\n'
                f"network_dim = {dim}\nnetwork_alpha = {dim}\nvalidation_split = 0.2\nsave_every_n_epochs = 1\n"
                f'sample_prompts = "configs/p.txt"\nsample_every_n_epochs = 1\noutput_name = "{name}"\nlog_with = "none"\n'
            )
            api.post("/api/jobs", json={"kind": "train", "config": config})
            job_done(server, name)


def test_every_page_in_chinese_leaves_no_english(ui, tmp_path):
    server, playwright, world = ui
    ensure_runs(server)
    base = server.url
    shot = Shots(tmp_path / "shots")
    browser = open_browser(playwright, tmp_path / "profile", locale="zh-CN")
    page = browser.new_page()
    with server.client() as api:
        job = next(j for j in api.get("/api/jobs").json() if j["name"] == "magenta-d4")
    tour = [
        ("datasets?open=datasets%2Fmagenta", "#pictures .picture", None),
        ("datasets?open=datasets%2Fmagenta", "#check-summary", "#tab-check"),
        ("datasets?open=datasets%2Fmagenta", "#bucket-table", "#tab-buckets"),
        ("datasets?open=datasets%2Fmagenta", "#tag-dialog[open]", "#auto-tag"),
        ("datasets?open=datasets%2Fmagenta", "#caption-dialog[open]", "#caption-pictures"),
        ("train?dataset=datasets%2Fmagenta", "#plan-total[data-steps]", "#apply-preset"),
        ("queue", "#jobs tr[data-job]", None),
        (f"monitor?job={job['id']}", "#banners .banner", None),
        ("runs", 'tr[data-run="runs/magenta-d4"]', None),
        ("compare?run=runs%2Fmagenta-d4&run=runs%2Fmagenta-d8", "#compare-table", None),
        ("grid?run=runs%2Fmagenta-d4", "#grid-view > *", None),
        ("tools", "#tool-inspect", None),
    ]
    problems = {}
    for size, label in ((None, "desktop"), (PHONE, "phone")):
        if size:
            page.set_viewport_size(size)
        for route, ready, action in tour:
            go(page, base, route, ".page h1")
            assert page.inner_text("nav").startswith("数据集")  # the browser's language first
            if action:
                page.click(action)
            page.wait_for_selector(ready, timeout=60_000)
            page.wait_for_timeout(400)
            if (route.startswith("train") or "dialog" in ready) and label == "desktop":
                page.evaluate(
                    "() => document.querySelectorAll('details').forEach((d) => (d.open = true))"
                )  # every option's help
            name = route.split("?")[0] + ("-" + action.strip("#") if action else "")
            shot(page, f"{label}-{name}")
            found = untranslated(page)
            if any(found.values()):
                problems[f"{label} {route} {action or ''}"] = found
            if label == "phone":
                width = page.evaluate("() => [document.documentElement.scrollWidth, innerWidth]")
                assert width[0] <= width[1] + 1, f"{route}: the page is wider than a phone ({width})"
    assert problems == {}, json.dumps(problems, ensure_ascii=False, indent=1)
    # the switch in the header: English, remembered after a reload
    page.set_viewport_size({"width": 1280, "height": 800})
    page.select_option("#language", "en")
    page.wait_for_selector("html[lang=en] nav a")  # the page reloads in English
    page.reload()
    page.wait_for_selector("html[lang=en] nav a")
    assert page.inner_text("nav").startswith("Datasets")
    browser.close()


def test_two_thousand_pictures_stay_smooth(ui, tmp_path):
    """The editor draws pictures in pages as one scrolls, and thumbnails come from a cache."""
    server, playwright, _ = ui
    folder = server.workspace / "datasets" / "many" / "1_many"
    folder.mkdir(parents=True)
    for i in range(2000):
        Image.new("RGB", (16, 16), (i % 256, 80, 160)).save(folder / f"{i:04d}.png")
        (folder / f"{i:04d}.txt").write_text(f"tag{i % 7}, common\n")
    shot = Shots(tmp_path / "shots")
    browser = open_browser(playwright, tmp_path / "profile")
    page = browser.new_page()
    began = time.monotonic()
    go(page, server.url, "datasets?open=datasets%2Fmany", "#pictures .picture")
    opened = time.monotonic() - began
    assert opened < 15, f"2,000 pictures took {opened:.1f} s to show"
    assert page.locator("#pictures .picture").count() == 120  # drawn in pages, not all at once
    assert "2000" in page.inner_text("#selection-count")
    for _ in range(3):
        page.mouse.wheel(0, 200_000)
        page.wait_for_timeout(300)
    assert page.locator("#pictures .picture").count() > 120
    page.click('#tag-table tr[data-tag="tag3"] button.with')
    assert page.locator("#selection-count").inner_text().startswith("286 of 2000")
    shot(page, "many-pictures")
    cache = server.workspace / ".lorakit-cache" / "thumbs"
    wait_for(lambda: len(list(cache.rglob("*.jpg"))) >= 20, what="thumbnails in the cache")
    with httpx.Client(base_url=server.url) as api:
        again = api.get("/api/thumb", params={"location": "datasets/many/1_many/0003.png", "size": 160})
    assert again.headers["x-thumbnail-cache"] == "hit"
    browser.close()


def test_the_api_docs_render_with_no_network(ui, tmp_path):
    """/docs is Swagger UI from files the package serves: with every other host cut off, the
    page still lists the API (FastAPI's default loads Swagger UI from a CDN: blank offline)."""
    server, playwright, _ = ui
    browser = open_browser(playwright, tmp_path / "profile")
    page = browser.new_page()
    elsewhere: list[str] = []

    def only_this_server(route):
        if route.request.url.startswith(server.url):
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    page.route("**/*", only_this_server)
    page.goto(f"{server.url}/docs")
    page.wait_for_selector(".swagger-ui .opblock", timeout=30_000)
    assert "lorakit" in page.inner_text(".swagger-ui .info .title")
    assert page.locator(".swagger-ui .opblock").count() >= 30
    assert elsewhere == []  # nothing was asked of another host
    Shots(tmp_path / "shots")(page, "api-docs")
    browser.close()
