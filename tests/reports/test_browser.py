"""The HTML report in a real headless browser (Chromium driven by Playwright).

It loads with no console errors, every figure is drawn inside the page width (at a desktop and at a
narrow window), the page itself never scrolls sideways, and each contents link lands on its section.
Skipped, with one line saying why, where Playwright or a Chromium binary is not available
(``.ci/run`` installs both).
"""

from __future__ import annotations

import os
import shutil

import pytest

_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run"]


def _chromium() -> str | None:
    """A Chromium binary: $SBN_BENCH_CHROMIUM, else ``chromium`` or ``chromium-browser`` on the PATH."""
    env = os.environ.get("SBN_BENCH_CHROMIUM")
    if env:
        return env if os.path.exists(env) else None
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="no browser test: Playwright is not installed")
    exe = _chromium()
    if exe is None:
        pytest.skip("no browser test: no Chromium binary (install Debian's chromium package)")
    with sync_api.sync_playwright() as pw:
        try:
            b = pw.chromium.launch(executable_path=exe, args=_ARGS, headless=True)
        except Exception as exc:  # noqa: BLE001 - any launch failure means no browser here
            pytest.skip(f"no browser test: Chromium did not start ({str(exc).splitlines()[0]})")
        yield b
        b.close()


def _open(browser, path, width: int):
    page = browser.new_page(viewport={"width": width, "height": 900})
    errors = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(path.resolve().as_uri(), wait_until="load")
    return page, errors


_FIGURES = """() => Array.from(document.querySelectorAll('figure svg')).map(svg => {
  const r = svg.getBoundingClientRect();
  return {id: svg.closest('figure').id, left: r.left, right: r.right, width: r.width, height: r.height,
          texts: svg.querySelectorAll('text').length};
})"""


def _figure_problems(page) -> list[str]:
    """What is wrong with the page's figures: not drawn, or reaching outside the page width; a page that scrolls
    sideways."""
    out = []
    page_width = page.evaluate("document.documentElement.clientWidth")
    for f in page.evaluate(_FIGURES):
        if not (f["width"] > 100 and f["height"] > 100 and f["texts"] > 5):
            out.append(f"{f['id']}: not drawn ({f})")
        if f["left"] < 0 or f["right"] > page_width + 0.5:
            out.append(f"{f['id']}: outside the page width {page_width} ({f})")
    if page.evaluate("document.documentElement.scrollWidth") > page_width:
        out.append("the page scrolls sideways")
    return out


@pytest.mark.parametrize("width", [1280, 820])
def test_report_loads_without_errors_and_figures_fit_the_page(browser, small_report, width):
    page, errors = _open(browser, small_report["html"], width)
    try:
        assert page.evaluate("document.querySelectorAll('figure svg').length") == 7  # every figure of the page
        assert _figure_problems(page) == []
        assert errors == []
    finally:
        page.close()


def test_the_checks_catch_a_broken_page(browser, tmp_path):
    svg = ('<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="300">'
           + "".join(f'<text x="10" y="{20 * i}">t</text>' for i in range(1, 8)) + "</svg>")
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><html><body><figure id='f-wide'>" + svg.format(w=3000) + "</figure>"
                   "<figure id='f-ok'>" + svg.format(w=400) + "</figure>"
                   "<script>console.error('boom')</script></body></html>", encoding="utf-8")
    page, errors = _open(browser, bad, 1280)
    try:
        problems = _figure_problems(page)
        assert any(p.startswith("f-wide: outside") for p in problems) and "the page scrolls sideways" in problems
        assert not any(p.startswith("f-ok") for p in problems)
        assert errors == ["boom"]
    finally:
        page.close()


def test_contents_links_land_on_their_sections(browser, small_report):
    page, errors = _open(browser, small_report["html"], 1280)
    try:
        links = page.evaluate("() => Array.from(document.querySelectorAll('nav a')).map(a => a.getAttribute('href'))")
        assert len(links) >= 6 and all(h.startswith("#") for h in links)
        for href in links:
            page.click(f'nav a[href="{href}"]')
            page.wait_for_function(f"location.hash === {href!r}")
            top, at_bottom = page.evaluate(
                """(id) => [document.getElementById(id).getBoundingClientRect().top,
                            window.scrollY + window.innerHeight >= document.documentElement.scrollHeight - 1]""",
                href[1:])
            # the section's heading is at the top of the window (or the page cannot scroll further)
            assert abs(top) <= 1 or (at_bottom and 0 <= top < 900), (href, top)
            page.evaluate("window.scrollTo(0, 0)")
        assert errors == []
    finally:
        page.close()
