"""One self-contained HTML page: inline CSS, inline SVG figures, Styler tables; opens offline.

The page is a jinja2 template (``templates/report.html.j2``, autoescaped) around blocks rendered
here. Determinism: every table gets a fixed ``table_uuid`` (its block name), every SVG a fixed
``svg.hashsalt`` and no metadata (no date, no creator link); SVG element ids get a per-figure
prefix, so ids stay unique on the page. ``svg.fonttype = "none"`` keeps figure text as searchable text.
"""

from __future__ import annotations

import io
import re
from importlib import metadata

import matplotlib
from jinja2 import Environment, PackageLoader, select_autoescape

from .document import Plot, Section, Table, Text
from .export import html_table
from .results import slug

__all__ = ["render_html", "svg_text", "generator"]

_SVG_META = {"Date": None, "Creator": None, "Format": None, "Type": None}


def generator() -> str:
    try:
        return f"sbn-bench {metadata.version('sbn-bench')}"
    except metadata.PackageNotFoundError:
        return "sbn-bench"


def svg_text(fig, name: str) -> str:
    """The figure as an inline ``<svg>`` element (no XML prolog or DOCTYPE), byte-stable for the same figure."""
    buf = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": f"sbn-bench:{name}", "svg.fonttype": "none"}):
        fig.savefig(buf, format="svg", metadata=_SVG_META)
    text = buf.getvalue()
    text = re.sub(r"<!--.*?-->", "", text[text.index("<svg"):], flags=re.S)
    # Element ids are per-figure counters ("axes_1"): prefix them, and every reference, so ids are unique on the page.
    pre = "f-" + slug(name) + "-"
    text = re.sub(r'(\sid=")', r"\g<1>" + pre, text)
    text = re.sub(r'((?:xlink:)?href="#)', r"\g<1>" + pre, text)
    text = text.replace("url(#", "url(#" + pre)
    # Scale with the page but never beyond the natural size (1 pt = 4/3 CSS px): --w caps it in the CSS.
    size = re.search(r'width="([\d.]+)pt" height="[\d.]+pt"', text[:text.index(">")])
    if size:
        text = text.replace(size.group(0), f'style="--w: {float(size.group(1)) * 4 / 3:.0f}px"', 1)
    return text


def _environment() -> Environment:
    return Environment(loader=PackageLoader("reports", "templates"),
                       autoescape=select_autoescape(enabled_extensions=("html", "j2"), default_for_string=True),
                       keep_trailing_newline=True)


def _block(b) -> dict | None:
    if isinstance(b, Table):
        return {"kind": "table", "anchor": "t-" + slug(b.name), "caption": b.caption,
                "html": html_table(b.frame, slug(b.name), b.sep)}
    if isinstance(b, Plot):
        fig = b.figure
        if fig is None:
            return {"kind": "text", "css": "p", "text": f"{b.caption}: nothing to plot."}
        return {"kind": "figure", "anchor": "f-" + slug(b.name), "html": svg_text(fig, b.name), "caption": b.caption}
    if isinstance(b, Text):
        return {"kind": "text", "css": b.kind, "text": b.text}
    raise TypeError(f"unknown report block {type(b).__name__}")


def render_html(sections: list[Section], title: str, subtitle: str) -> str:
    """The whole page as a string."""
    env = _environment()
    css = env.loader.get_source(env, "report.css")[0]
    secs = [{"title": s.title, "anchor": slug(s.anchor), "level": s.level,
             "blocks": [_block(b) for b in s.blocks if not (isinstance(b, Table) and not b.show)]} for s in sections]
    return env.get_template("report.html.j2").render(title=title, subtitle=subtitle, css=css, sections=secs,
                                                     generator=generator())
