"""Small HTML helpers of the report: escaping, numbers, tables, key/value rows, notes, sections,
inline images and the page's CSS. Nothing here reads a fit folder or draws a figure."""

from __future__ import annotations

import html
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["CSS", "Raw", "esc", "flatten", "img", "kv", "note", "num", "section", "table"]

# Inline, so that the page needs no external resource.
CSS = """
body{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;margin:0;background:#f4f5f7;color:#1d2330;font-size:14px}
header{background:#1d2330;color:#fff;padding:14px 28px}
header h1{margin:0;font-size:20px;font-weight:600}
header p{margin:4px 0 0;color:#b8c0cc;font-size:12px}
nav{background:#2b3345;padding:6px 28px}
nav a{color:#dfe6f0;text-decoration:none;margin-right:16px;font-size:12px}
main{max-width:1150px;margin:0 auto;padding:8px 20px 40px}
section{background:#fff;border-radius:6px;box-shadow:0 1px 2px rgba(0,0,0,.08);margin:16px 0;padding:12px 20px}
h2{font-size:16px;margin:4px 0 10px;border-bottom:1px solid #e3e6ea;padding-bottom:6px}
h3{font-size:13px;margin:12px 0 6px;color:#445}
table{border-collapse:collapse;font-size:12px;margin:4px 0 8px}
th,td{border-bottom:1px solid #e9ecef;padding:3px 10px;text-align:left;vertical-align:top}
th{background:#f6f7f9;font-weight:600}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.kv{display:flex;flex-wrap:wrap;gap:6px 18px}
.kv div{min-width:160px}
.kv b{display:block;font-size:11px;color:#667;font-weight:500}
.big{font-size:22px;font-weight:600}
.note{background:#fff7e0;border-left:3px solid #f0b429;padding:6px 10px;margin:6px 0;font-size:12px}
.bad{background:#fde8e8;border-left-color:#d64545}
.ok{color:#1f7a3f}.warn{color:#b45309}
img{max-width:100%;height:auto}
.row{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}
.muted{color:#778;font-size:12px}
footer{color:#889;font-size:11px;text-align:center;padding:10px}
"""


def esc(x: Any) -> str:
    """``str(x)`` escaped for HTML text and attribute values."""
    return html.escape(str(x))


def num(v: Any, digits: int = 3) -> str:
    """A number for a table cell: ints as is, floats with ``digits`` decimals (trailing zeros
    dropped) or in ``g`` format when very large or small; ``–`` for None/NaN."""
    if v is None:
        return "–"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    try:
        x = float(v)
    except (TypeError, ValueError):
        return esc(v)
    if not math.isfinite(x):
        return "–"
    if x == 0:
        return "0"
    if abs(x) >= 1e5 or abs(x) < 10.0 ** (-digits):
        return f"{x:.{digits}g}"
    text = f"{x:.{digits}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def table(header: list[str], rows: list[list[Any]], numeric_from: int = 1) -> str:
    """A ``<table>``: one header row, then ``rows``; cells from column ``numeric_from`` on that are
    not strings are formatted by :func:`num` and right-aligned."""
    out = ["<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>"]
    for r in rows:
        cells = []
        for i, v in enumerate(r):
            if i >= numeric_from and not isinstance(v, str):
                cells.append(f'<td class="num">{num(v)}</td>')
            else:
                cells.append(f"<td>{esc(v)}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    return "".join(out)


def kv(items: list[tuple[str, Any]]) -> str:
    """Key/value pairs as a wrapping row of labelled values (a :class:`Raw` value is not escaped)."""
    return '<div class="kv">' + "".join(f"<div><b>{esc(k)}</b>{v if isinstance(v, Raw) else esc(v)}</div>" for k, v in items) + "</div>"


class Raw(str):
    """HTML that must not be escaped again."""


def flatten(d: Mapping, prefix: str = "") -> list[tuple[str, Any]]:
    """Nested mappings as ``("a.b.c", value)`` pairs, in insertion order."""
    out: list[tuple[str, Any]] = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out += flatten(v, key + ".")
        else:
            out.append((key, v))
    return out


def note(text: str, bad: bool = False) -> str:
    """A highlighted note (red when ``bad``)."""
    return f'<div class="note{" bad" if bad else ""}">{esc(text)}</div>'


def section(sid: str, title: str, body: str) -> str:
    """A ``<section>`` with element id ``sid``, a title and an HTML body."""
    return f'<section id="{sid}"><h2>{esc(title)}</h2>{body}</section>'


def img(b64: str, alt: str, mime: str = "image/png", width: int | None = None) -> str:
    """An inline image from base64 data (a ``data:`` URI), at most ``width`` pixels wide when given."""
    w = f' style="max-width:{width}px"' if width else ""
    return f'<img src="data:{mime};base64,{b64}" alt="{html.escape(alt)}"{w}>'
