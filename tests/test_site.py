"""Open every page of the built book in headless Chromium and check it works with no network.

Per page: no console or page errors, no failed request or HTTP error, no request to another host,
internal links resolve (file and #fragment), images load, math is typeset by MathJax and embedded
widgets are drawn. Chapter pages are also saved as full-page screenshots in _build/screenshots/.
Needs `make book` first and the system Chromium (`apt-get install chromium`); with CI set, a
missing site or browser is a failure instead of a skip.
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[1]
SITE = ROOT / "_build" / "html"
SCREENSHOTS = ROOT / "_build" / "screenshots"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SKIP_DIRS = {"_static", "_sources", "_images", "_downloads"}
IN_CI = os.environ.get("CI", "").lower() not in ("", "0", "false", "no")
LOAD_TIMEOUT_MS = 30_000
RENDER_TIMEOUT_MS = 15_000
WIDGET_VIEW = 'script[type="application/vnd.jupyter.widget-view+json"]'


def _pages() -> list[str]:
    if not SITE.is_dir():
        return []
    pages = []
    for path in SITE.rglob("*.html"):
        rel = path.relative_to(SITE)
        if rel.parts[0] not in SKIP_DIRS:
            pages.append(rel.as_posix())
    return sorted(pages)


PAGES = _pages()


def _unavailable() -> str | None:
    """Why the browser check cannot run here, or None when it can."""
    if not CHROMIUM.exists():
        return f"{CHROMIUM} not found: install it with `apt-get install chromium`"
    if not (SITE / "index.html").is_file():
        return f"no built site in {SITE}: run `make book` first"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is missing: run `make setup`"
    return None


def _skip_or_fail(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"browser check cannot run in CI: {reason}", pytrace=False)
    pytest.skip(reason)


def test_site_check_can_run() -> None:
    """The browser check only skips on a reader's machine, never in CI."""
    reason = _unavailable()
    if reason:
        _skip_or_fail(reason)
    assert PAGES, f"no HTML pages found under {SITE}"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def site_url() -> Iterator[str]:
    handler = functools.partial(_QuietHandler, directory=str(SITE))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser_context(site_url: str) -> Iterator[object]:
    reason = _unavailable()
    if reason:
        _skip_or_fail(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        yield context
        context.close()
        browser.close()


@functools.cache
def _ids_in(path: Path) -> frozenset[str]:
    text = path.read_text(encoding="utf-8", errors="replace")
    return frozenset(re.findall(r"""\b(?:id|name)\s*=\s*["']([^"']+)["']""", text))


def _broken_link(href: str, site_url: str) -> str | None:
    """Describe what is wrong with an internal link, or None when it resolves."""
    parts = urlsplit(href)
    rel = unquote(parts.path)[len(urlsplit(site_url).path) :]
    target = SITE / rel
    if rel == "" or rel.endswith("/"):
        target = target / "index.html"
    if not target.is_file():
        return f"{href}: no file {target.relative_to(SITE)}"
    fragment = unquote(parts.fragment)
    if fragment and target.suffix == ".html" and fragment not in _ids_in(target):
        return f"{href}: no element with id {fragment!r} in {target.relative_to(SITE)}"
    return None


# Text nodes outside code that still hold TeX delimiters, i.e. math MathJax never typeset.
RAW_TEX_JS = r"""() => {
  const skip = 'pre, code, script, style, textarea, mjx-container, .highlight';
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  const found = [];
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const text = node.nodeValue;
    if (/\\\(|\\\[|\$\$/.test(text) && !node.parentElement.closest(skip)) {
      found.push(text.trim().slice(0, 80));
    }
  }
  const untypeset = Array.from(document.querySelectorAll('.math'))
    .filter(el => !el.querySelector('mjx-container'))
    .map(el => el.textContent.trim().slice(0, 80));
  return found.concat(untypeset);
}"""

MATHJAX_DONE_JS = """async () => {
  if (!(window.MathJax && MathJax.startup && MathJax.startup.promise)) {
    return document.querySelector('.math') === null ? 'no math' : 'MathJax did not load';
  }
  await MathJax.startup.promise;
  return 'typeset';
}"""

WIDGETS_DRAWN_JS = f"""() => Array.from(document.querySelectorAll('{WIDGET_VIEW}')).every(tag => {{
  const area = tag.previousElementSibling;
  return area !== null && area.classList.contains('widget-subarea') && area.childElementCount > 0;
}})"""

IMAGES_JS = """async () => {
  const images = Array.from(document.images);
  images.forEach(img => { img.loading = 'eager'; });
  await Promise.all(images.map(img => img.decode().catch(() => null)));
  return images.filter(img => img.naturalWidth === 0).map(img => img.currentSrc || img.src);
}"""


def _redirect_target(path: Path) -> str | None:
    match = re.search(
        r"""http-equiv=["']refresh["'][^>]*url=([^"'>]+)""", path.read_text(), re.IGNORECASE
    )
    return match.group(1).strip() if match else None


@pytest.mark.parametrize("page_path", PAGES)
def test_page(page_path: str, browser_context, site_url: str) -> None:
    redirect = _redirect_target(SITE / page_path)
    if redirect is not None:  # index.html only forwards to the first page
        assert (SITE / page_path).parent.joinpath(redirect).is_file(), f"redirect to {redirect}"
        return

    problems: list[str] = []
    page = browser_context.new_page()

    def on_request(request) -> None:
        host = urlsplit(request.url).hostname
        if request.url.split(":", 1)[0] in ("http", "https", "ws", "wss") and host != "127.0.0.1":
            problems.append(f"request leaves the machine: {request.url}")

    def on_response(response) -> None:
        if response.status >= 400:
            problems.append(f"HTTP {response.status}: {response.url}")

    def on_failed(request) -> None:
        if urlsplit(request.url).hostname == "127.0.0.1":
            problems.append(f"request failed ({request.failure}): {request.url}")

    page.on("request", on_request)
    page.on("response", on_response)
    page.on("requestfailed", on_failed)
    page.on("console", lambda msg: msg.type == "error" and problems.append(f"console: {msg.text}"))
    page.on("pageerror", lambda err: problems.append(f"page error: {err}"))
    # Nothing may leave 127.0.0.1: other hosts are recorded above and answered with an abort.
    page.route(
        re.compile(r"^(?!http://127\.0\.0\.1[:/]).*"),
        lambda route: route.abort("blockedbyclient"),
    )

    try:
        page.goto(site_url + page_path, wait_until="load", timeout=LOAD_TIMEOUT_MS)
        math_state = page.evaluate(MATHJAX_DONE_JS)
        if math_state == "MathJax did not load":
            problems.append("page has math but MathJax did not load")
        problems += [f"math not typeset: {tex!r}" for tex in page.evaluate(RAW_TEX_JS)]

        if page.locator(WIDGET_VIEW).count():
            try:
                page.wait_for_function(WIDGETS_DRAWN_JS, timeout=RENDER_TIMEOUT_MS)
            except Exception:
                problems.append("a widget output stayed empty (widget manager or state missing)")

        problems += [f"image did not load: {src}" for src in page.evaluate(IMAGES_JS)]

        hrefs = page.eval_on_selector_all("a[href]", "links => links.map(a => a.href)")
        internal = {h for h in hrefs if h.startswith(site_url)}
        problems += filter(None, (_broken_link(h, site_url) for h in sorted(internal)))

        if page_path.startswith("notebooks/"):
            name = page_path.removeprefix("notebooks/").removesuffix(".html").replace("/", "_")
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
    finally:
        page.close()

    assert not problems, f"{page_path}:\n  " + "\n  ".join(dict.fromkeys(problems))


# ---------------------------------------------------------------------------------------------------------
# Kernel-free figures (minigpt_lib.static_widgets): every control must redraw the figure, without errors.

# Pages that hold a drawn figure (the element itself, not the module's source shown by viewcode).
STATIC_PAGES = [
    p for p in PAGES if '<div class="minigpt-static ' in (SITE / p).read_text(encoding="utf-8", errors="replace")
]
STATIC = ".minigpt-static"


def _move(control) -> str:
    """Set a select or range input to another value (as a reader would) and return the value chosen."""
    if control.evaluate("el => el.tagName") == "SELECT":
        options = control.evaluate("el => Array.from(el.options).map(o => o.value)")
        value = options[-1] if control.input_value() != options[-1] else options[0]
        control.select_option(value)
        return value
    low, high = float(control.get_attribute("min")), float(control.get_attribute("max"))
    value = high if float(control.input_value()) != high else low
    control.fill(f"{value:g}")
    return f"{value:g}"


def _sampling_matches_python(widget) -> list[str]:
    """The bars' probabilities equal what minigpt_lib.generate computes from the same embedded logits."""
    import json

    import torch

    from minigpt_lib.generate import filter_logits

    data = json.loads(widget.locator("script.minigpt-data").text_content())
    settings = {"temperature": 0.7, "top-k": 0, "top-p": 0.9}
    for name, value in settings.items():
        widget.locator(f'input[name="{name}"]').fill(str(value))
    prompt = data["prompts"][int(widget.locator('select[name="prompt"]').input_value())]
    logits = torch.tensor([prompt["logits"]], dtype=torch.float64) / settings["temperature"]
    expected = torch.softmax(filter_logits(logits, top_p=settings["top-p"]), dim=-1)[0]
    expected = sorted((p for p in expected.tolist() if p > 0), reverse=True)[:12]
    bars = widget.locator("rect[data-probability]")
    shown = [float(v) for v in bars.evaluate_all("bars => bars.map(b => b.dataset.probability)")]
    if len(shown) != len(expected) or any(abs(a - b) > 1e-4 for a, b in zip(shown, expected, strict=False)):
        return [f"sampling playground shows {shown}, expected {[round(p, 4) for p in expected]}"]
    return []


@pytest.mark.parametrize("page_path", STATIC_PAGES)
def test_static_widgets_redraw_on_every_control(page_path: str, browser_context, site_url: str) -> None:
    problems: list[str] = []
    page = browser_context.new_page()
    page.on("console", lambda msg: msg.type == "error" and problems.append(f"console: {msg.text}"))
    page.on("pageerror", lambda err: problems.append(f"page error: {err}"))
    try:
        page.goto(site_url + page_path, wait_until="load", timeout=LOAD_TIMEOUT_MS)
        widgets = page.locator(STATIC)
        assert widgets.count(), f"{page_path}: no {STATIC} element"
        for i in range(widgets.count()):
            widget = widgets.nth(i)
            figure = widget.locator(".minigpt-figure")
            if not figure.locator("svg").count():
                problems.append(f"figure {i} was not drawn")
                continue
            for control in widget.locator("select, input").all():
                name, before = control.get_attribute("name"), figure.inner_html()
                value = _move(control)
                if figure.inner_html() == before:
                    problems.append(f"figure {i}: setting {name} to {value} did not change the figure")
            if "minigpt-sampling" in (widget.get_attribute("class") or ""):
                problems += _sampling_matches_python(widget)
    finally:
        page.close()
    assert not problems, f"{page_path}:\n  " + "\n  ".join(dict.fromkeys(problems))
