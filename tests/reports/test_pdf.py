"""The PDF report read back with pypdf: pages, metadata, extractable text, embedded TrueType fonts.

Determinism (byte-identical rebuilds, across processes) is tested in test_build.py.
"""

from __future__ import annotations

import re

import pytest

pypdf = pytest.importorskip("pypdf")


def _pages_text(path) -> list[str]:
    return [p.extract_text() or "" for p in pypdf.PdfReader(path).pages]


def test_metadata_and_pages(small_report):
    reader = pypdf.PdfReader(small_report["pdf"])
    meta = reader.metadata
    assert meta.title == "sbn-bench report: run r20240101-abc"
    assert "/CreationDate" not in meta and "/ModDate" not in meta
    # title page, run section, 2 problems (ranking + figure + cost table each), bias-variance, Pareto,
    # timings (+ chart), bookkeeping
    assert 9 <= len(reader.pages) <= 14


def test_text_is_extractable(small_report):
    texts = _pages_text(small_report["pdf"])
    assert texts[0].startswith("sbn-bench report: run r20240101-abc") and "Contents" in texts[0]
    whole = "\n".join(texts)
    for name in ("psa", "st", "reinforce", "tanh"):  # every estimator, in the tables and figure legends
        word = re.compile(rf"(?<![\w:-]){name}(?![\w:-])")
        assert sum(bool(word.search(t)) for t in texts) >= 5, name
    assert "0123456789abcdef" in whole and "Test CPU" in whole  # manifest
    ranking_b = [t for t in texts if "toy-b: estimators ranked" in t]
    assert len(ranking_b) == 1 and "failed: CUDA error: out" in ranking_b[0]
    assert any("reinforce — FAILED" in t for t in texts)  # the figure legend of toy-b
    assert "toy-a: accuracy per parameter group" in whole and "states per second" in whole


def test_fonts_are_embedded_truetype(small_report):
    reader = pypdf.PdfReader(small_report["pdf"])
    kinds = set()
    for page in reader.pages:
        fonts = page["/Resources"].get("/Font", {})
        for ref in fonts.values():
            font = ref.get_object()
            kinds.add(font["/Subtype"])
            if font["/Subtype"] == "/TrueType":
                assert "/FontFile2" in font["/FontDescriptor"].get_object()
    assert kinds and kinds <= {"/TrueType", "/Type0"}, kinds  # no Type 3 bitmaps


def test_psa2020_pages(psa_report):
    texts = _pages_text(psa_report["pdf"])
    comp = [t for t in texts if "chk-100: relative RMSE" in t]
    assert comp and "Concrete-t=0.1" in comp[0] and "ratio" in comp[0]
    assert any("arXiv:2006.03143" in t for t in texts)
    assert sum("accuracy per parameter group" in t for t in texts) == 2


def test_wide_ranking_is_split_never_shrunk_below_7pt(synthetic_run):
    from reports import tables
    from reports.pdf_table import typeset

    run = synthetic_run(problems=("toy-a",), estimators=("psa", "st", "reinforce", "arm", "tanh"),
                        groups=tuple(f"layer{i}" for i in range(8)) + ("head",), failed=(), timings=False)
    df = tables.ranking_table(run, "toy-a")
    ts = typeset(df)
    assert ts.size >= 7.0 and len(ts.blocks) > 1  # too wide for one block at 7 pt: split, not shrunk
    lead = [0, 1, 2]  # rank, rank at budget, estimator
    assert [ts.sub[j] for j in lead] == ["rank", "rank at budget", "estimator"]
    assert all(b[:3] == lead for b in ts.blocks)
    rest = [j for b in ts.blocks for j in b[3:]]
    assert sorted(rest) == list(range(3, df.shape[1]))  # every other column once
