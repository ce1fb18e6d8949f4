"""Driving the pages in a real Chromium (Debian's `chromium`, through Playwright's Python client;
no browser is downloaded): the browser, screenshots, and the checks every page gets — labels,
alt texts, keyboard focus, and in Chinese no English left on the page."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("LORAKIT_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


def need_browser():
    """The Playwright module and a system Chromium, or a skip that says how to get them
    (CI sets LORAKIT_REQUIRE_BROWSER=1, so there a missing browser fails instead)."""
    required = os.environ.get("LORAKIT_REQUIRE_BROWSER") == "1"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if required:
            raise
        pytest.skip("the playwright package is not installed (pip install -e '.[test]')")
    if CHROMIUM is None:
        if required:
            pytest.fail("LORAKIT_REQUIRE_BROWSER=1 but no chromium was found")
        pytest.skip(
            "no chromium found: install Debian's chromium package (apt-get install chromium) for the browser tests"
        )
    return sync_playwright


def open_browser(playwright, profile: Path, locale: str = "en-US"):
    """A fresh profile each time: no remembered language, no cache."""
    return playwright.chromium.launch_persistent_context(
        str(profile),
        executable_path=CHROMIUM,
        headless=True,
        args=ARGS,
        viewport=DESKTOP,
        locale=locale,
        accept_downloads=False,
    )


class Shots:
    """Numbered full-page screenshots of every page a test visits, under its output folder."""

    def __init__(self, folder: Path):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.count = 0

    def __call__(self, page, name: str) -> Path:
        self.count += 1
        path = self.folder / f"{self.count:02d}-{name}.png"
        # sticky parts are drawn where the view is; the transient notices would cover the page
        page.evaluate(
            "() => { window.scrollTo(0, 0); document.getElementById('toasts')?.replaceChildren(); }"
        )
        page.wait_for_timeout(150)  # let the last drawing settle
        page.screenshot(path=str(path), full_page=True)
        return path


def go(page, base: str, route: str, ready: str = "body") -> None:
    """Open a page of the app by its hash route; wait until it has drawn and `ready` is there."""
    target = f"{base}/#/{route}"
    if page.url.startswith(base):
        page.evaluate("() => { delete document.body.dataset.ready; }")
    if page.url == target:
        page.reload()
    else:
        page.goto(target)
    page.wait_for_selector("body[data-ready]", state="attached", timeout=60_000)
    page.wait_for_selector(ready, state="attached", timeout=60_000)


# -- accessibility basics ----------------------------------------------------------------------

UNLABELLED = """() => [...document.querySelectorAll("input, select, textarea")]
  .filter((el) => el.type !== "hidden")
  .filter((el) => !(el.labels && el.labels.length) && !el.getAttribute("aria-label") && !el.getAttribute("aria-labelledby"))
  .map((el) => el.outerHTML.slice(0, 120))"""
NO_ALT = """() => [...document.images].filter((img) => !(img.getAttribute("alt") || "").trim()).map((img) => img.outerHTML.slice(0, 120))"""
MARK_BUTTONS = """() => {
  const shown = (el) => el.checkVisibility({ visibilityProperty: true, contentVisibilityAuto: true });
  const buttons = [...document.querySelectorAll("button")].filter((b) => !b.disabled && shown(b) && !b.closest("dialog:not([open])"));
  buttons.forEach((b, i) => (b.dataset.kbd = String(i)));
  document.activeElement && document.activeElement.blur();
  window.scrollTo(0, 0);
  window.lorakitFocused = new Set();  // every button the keyboard focus lands on
  document.addEventListener("focusin", (e) => e.target.dataset && e.target.dataset.kbd && window.lorakitFocused.add(e.target.dataset.kbd));
  const stops = [...document.querySelectorAll("a[href], button, input, select, textarea, summary, [tabindex]")].filter(shown);
  return [buttons.length, stops.length];
}"""
NOT_REACHED = """() => [...document.querySelectorAll("button[data-kbd]")]
  .filter((b) => !window.lorakitFocused.has(b.dataset.kbd)).map((b) => b.outerHTML.slice(0, 100))"""


def check_accessibility(page, where: str) -> None:
    """Every form field has a label, every picture an alt text, and Tab reaches every button."""
    assert page.evaluate(UNLABELLED) == [], f"{where}: form fields without a label"
    assert page.evaluate(NO_ALT) == [], f"{where}: pictures without an alt text"
    total, stops = page.evaluate(MARK_BUTTONS)
    page.focus("body")
    for n in range(stops * 2 + 20):  # a tab stop per focusable element, twice over at most
        page.keyboard.press("Tab")
        if n % 20 == 19 and not page.evaluate(NOT_REACHED):
            break
    missing = page.evaluate(NOT_REACHED)
    assert not missing, f"{where}: Tab never reaches these buttons ({total} in all): {missing}"


# -- the Chinese pages -------------------------------------------------------------------------

VISIBLE_TEXT = """() => {
  const shown = (el) => {
    const box = el.tagName === "OPTION" ? el.closest("select") : el;
    return box && box.checkVisibility({ visibilityProperty: true, contentVisibilityAuto: true });
  };
  const texts = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (walker.nextNode()) {
    const node = walker.currentNode;
    const el = node.parentElement;
    const text = node.textContent.trim();
    if (!text || !el || el.closest('[translate="no"], script, style, pre, code')) continue;
    if (shown(el)) texts.push(text);
  }
  for (const el of document.querySelectorAll("[alt], [aria-label], [title], [placeholder]")) {
    if (el.closest('[translate="no"]')) continue;
    for (const name of ["alt", "aria-label", "title", "placeholder"]) if (el.hasAttribute(name)) texts.push(el.getAttribute(name));
  }
  for (const el of document.querySelectorAll("svg title")) texts.push(el.textContent);
  return { texts, english: [...document.querySelectorAll('[lang="en"]')].map((e) => e.textContent), missing: [...(window.lorakitMissing || [])] };
}"""

# Names that stay as they are in a Chinese UI: products, formats, units, option values.
TERMS = set(
    """lorakit LoRA SDXL SD TOML GB VAE U-Net sd-scripts lora-scripts ComfyUI diffusers AdamW AdaFactor
    AdamWScheduleFree DAdaptation Prodigy Lion CPU JSON Karras Huber Min-SNR SNR NaN PyTorch TensorBoard
    DEBUG INFO WARNING ERROR alpha dim token auto no none float area nearest lanczos bilinear bicubic
    constant cosine linear polynomial exponential snr huber ckpt pt safetensors tensorboard ddim ohwx
    smiling v-pred --d --s BLIP GIT GPU Hugging Face
    DreamBooth Dreambooth dreambooth Textual Inversion embedding embeddings Embedding hypernetwork Hypernetwork lora
    LayerNorm dropout CLIP-L OpenCLIP-G KB relu leakyrelu elu swish tanh sigmoid Normal XavierUniform
    XavierNormal KaimingUniform KaimingNormal""".split()
)  # the methods' names as the Chinese tutorials write them (../shared/seeds/001_*.txt), and option values
QUOTED = re.compile(r'"[^"]*"')  # a quoted example (a prompt, a value) is data, not UI text
WORD = re.compile(r"[A-Za-z0-9_.\-/@:=+'|;\[\]{}]+")


def english_words(text: str) -> list[str]:
    """Latin-script words that are not data (paths, option names, numbers) or known terms."""
    out = []
    for token in WORD.findall(QUOTED.sub(" ", text)):
        if re.search(r"[_./@:=0-9+|;\[\]{}]", token) or len(token) <= 1 or token in TERMS:
            continue
        if re.search(r"[A-Za-z]{2,}", token):
            out.append(token)
    return out


def untranslated(page) -> dict:
    """What a Chinese page shows in English: texts with English words, library messages the
    catalogue could not translate, and strings the code asked for without a translation."""
    found = page.evaluate(VISIBLE_TEXT)
    return {
        "texts": sorted({t for t in found["texts"] if english_words(t)}),
        "messages": found["english"],
        "missing": found["missing"],
    }
