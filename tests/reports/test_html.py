"""The HTML report, parsed with the standard library's html.parser: structure, numbers, self-containment.

Determinism (byte-identical rebuilds, across processes) is tested in test_build.py.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest

from reports import build_report
from reports.export import NA


class _Page(HTMLParser):
    """Collects tables (header and body cells with their classes), images, inline SVGs, links and text."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tables, self.imgs, self.svgs, self.refs, self.tags, self.text = [], [], 0, [], [], []
        self.meta, self._cell, self._table, self.ids = {}, None, None, []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        if "id" in a:
            self.ids.append(a["id"])
        for key in ("src", "href", "data", "xlink:href", "action"):
            if key in a:
                self.refs.append((tag, a[key]))
        if tag == "table":
            self._table = {"head": [], "body": [], "caption": self._last_caption}
            self.tables.append(self._table)
        elif tag in ("th", "td") and self._table is not None:
            self._cell = {"tag": tag, "cls": (a.get("class") or "").split(), "text": ""}
        elif tag == "img":
            self.imgs.append(a.get("src", ""))
        elif tag == "svg":
            self.svgs += 1
        elif tag == "meta" and "name" in a:
            self.meta[a["name"]] = a.get("content")

    _last_caption = ""

    def handle_endtag(self, tag):
        if tag in ("th", "td") and self._cell is not None:
            cell = self._cell
            (self._table["head"] if cell["tag"] == "th" else self._table["body"]).append(cell)
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell["text"] += data
        self.text.append(data)
        if data.strip():
            self._last_caption = data.strip() if self._table is None else self._last_caption


def _parse(path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def _table(page: _Page, caption_start: str) -> dict:
    found = [t for t in page.tables if t["caption"].startswith(caption_start)]
    assert len(found) == 1, [t["caption"] for t in page.tables]
    return found[0]


def test_tables_headers_and_numeric_cells(small_report):
    page = _parse(small_report["html"])
    captions = [t["caption"] for t in page.tables]
    # results first (each problem's ranking then its cost table, then timings), the bookkeeping last
    assert [c.split(":")[0] for c in captions] == ["toy-a", "toy-a", "toy-b", "toy-b", "Timings",
                                                   "Run r20240101-abc", "Failed tasks (no scores; shown, not dropped)",
                                                   "Tasks"]
    assert captions[0].startswith("toy-a: estimators ranked by the geometric mean over the 3 parameter groups")
    assert captions[1].startswith("toy-a: cost per draw, warm")
    ranking = _table(page, "toy-a: estimators ranked")
    heads = [c["text"] for c in ranking["head"]]
    for h in ("rank", "estimator", "equal-weight score (geo-mean over groups)", "rank in group (rel. RMSE, M=1)",
              "rel. RMSE, M=1", "rel. RMSE at budget", "rel. bias |b|/|g| [95% CI]", "layer0", "layer1", "head",
              "whole", "tr Var", "cosine, M=1", "seconds", "x seconds"):
        assert h in heads
    numeric = [c for t in page.tables for c in t["body"] if "num" in c["cls"]]
    assert len(numeric) > 100
    for c in numeric:
        if c["text"] != NA:
            float(c["text"])  # parses as a number
    assert [c["text"] for c in ranking["body"][:4]] == ["1", "1", "psa", "no"]


def test_results_lead_and_bookkeeping_comes_last(small_report):
    html = small_report["html"].read_text(encoding="utf-8")
    order = [html.index(f'id="{a}"') for a in ("r20240101-abc", "r20240101-abc_toy-a", "t-r20240101-abc_toy-a_ranking",
                                                 "f-r20240101-abc_toy-a_layers0", "r20240101-abc_biasvar",
                                                 "r20240101-abc_pareto", "r20240101-abc_timings",
                                                 "r20240101-abc_bookkeeping", "t-r20240101-abc_manifest",
                                                 "t-r20240101-abc_tasks")]
    assert order == sorted(order)


def test_manifest_shows_commit_and_device(small_report):
    cells = [c["text"] for c in _table(_parse(small_report["html"]), "Run r20240101-abc: manifest")["body"]]
    pairs = dict(zip(cells[::2], cells[1::2]))
    assert pairs["git_commit"] == "0123456789abcdef" and pairs["device_name"] == "Test CPU"
    assert pairs["device"] == "cpu" and pairs["torch"] == "2.13.0"


def test_failed_task_is_visible_and_escaped(small_report):
    page = _parse(small_report["html"])
    failed_rows = [c["text"] for t in page.tables for c in t["body"] if "failed" in c["cls"]]
    assert "reinforce" in failed_rows and "failed: CUDA error: out of memory <oops>" in failed_rows
    assert "oops" not in page.tags  # the error text was escaped, not parsed as a tag
    ranking_b = _table(page, "toy-b: estimators ranked")["body"]
    assert any("failed" in c["cls"] and c["text"] == "reinforce" for c in ranking_b)
    assert any("reinforce — FAILED" in t for t in page.text)  # in the figure legends too
    assert any("1 failed" in t for t in page.text)


def test_self_contained(small_report):
    page = _parse(small_report["html"])
    html = small_report["html"].read_text(encoding="utf-8")
    assert all(src.startswith("data:") for src in page.imgs)
    assert page.svgs == 7  # per problem (2): layers, bias-variance, Pareto; throughput: all inline
    assert len(page.ids) == len(set(page.ids))  # per-figure SVG ids never collide across figures
    for tag, ref in page.refs:
        assert not re.match(r"(?i)\s*(https?:)?//", ref), (tag, ref)
        assert ref.startswith("#") and ref[1:] in page.ids, (tag, ref)  # only in-page references
    assert "script" not in page.tags and "link" not in page.tags and "iframe" not in page.tags
    assert not re.search(r"@import|url\((?!#)", html)  # only in-page url(#id) references (SVG clip paths)
    for ref in re.findall(r"url\(#([^)]+)\)", html):
        assert ref in page.ids
    assert page.meta["viewport"].startswith("width=device-width")


def test_psa2020_comparison_section(psa_report):
    page = _parse(psa_report["html"])
    assert any("Comparison with the PSA paper" in t for t in page.text)
    assert any("arXiv:2006.03143" in t for t in page.text)
    tab = _table(page, "chk-100: relative RMSE")
    heads = [c["text"] for c in tab["head"]]
    assert heads[:3] == ["", "M=1", "M=10"] and heads.count("ratio") == 5
    n_cols = len([h for h in heads if h not in ("M=1", "M=10", "M=100", "M=1000", "M=9000")]) - 1
    rows = [tab["body"][i:i + n_cols] for i in range(0, len(tab["body"]), n_cols)]
    psa = [r for r in rows if r[0]["text"] == "layer0" and r[1]["text"] == "PSA"][0]
    assert [c["text"] for c in psa[3:6]] == ["0.174", "0.158", "1.1"]  # run, paper
    # (``docs/protocols.md#published-values``), ratio
    cos = _table(page, "chk-2000: mean cosine")
    assert any("failed" in c["cls"] and c["text"] == "ARM" for c in cos["body"])


@pytest.mark.parametrize("bad", [("svg",), "html,docx"])
def test_unknown_format(tmp_path, synthetic_run, bad):
    from reports import ReportError

    with pytest.raises(ReportError, match="unknown report format"):
        build_report([synthetic_run()], tmp_path / "out", formats=bad)
    assert not (tmp_path / "out").exists()
