"""A report as a list of blocks, rendered to Markdown and to a self-contained static HTML page.

Blocks: ``("h1"|"h2"|"h3"|"p", text)``, ``("list", [text, ...])``, ``("table", (headers, rows))`` and
``("figure", png, svg, caption)``. Text may use ``code`` and **bold**; HTML is escaped first. The
page is written by hand (a few lines of ``html.escape``) so the report needs no template engine.
"""

from __future__ import annotations

import html
import re
from typing import Any

from xtask_safety.report.tables import md_table

Block = tuple[Any, ...]

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1180px;margin:2em auto;padding:0 1em;
color:#1d2228;line-height:1.45}
h1{font-size:1.6em}h2{margin-top:1.8em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;margin:.8em 0;font-size:.86em}
th,td{border:1px solid #d0d5da;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f3f5f7}tr:nth-child(even) td{background:#fafbfc}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #eee}figcaption{font-size:.85em;color:#555}
code{background:#f3f5f7;padding:0 .25em;border-radius:3px}
"""


def _inline_html(text: str) -> str:
    out = html.escape(text, quote=False)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", out)


def to_markdown(blocks: list[Block]) -> str:
    parts: list[str] = []
    for b in blocks:
        kind = b[0]
        if kind in ("h1", "h2", "h3"):
            parts.append("#" * int(kind[1]) + " " + b[1])
        elif kind == "p":
            parts.append(b[1])
        elif kind == "list":
            parts.append("\n".join(f"* {x}" for x in b[1]))
        elif kind == "table":
            headers, rows = b[1]
            parts.append(md_table(headers, rows))
        elif kind == "figure":
            _, png, svg, caption = b
            parts.append(f"![{caption}]({png})\n\n*{caption}* ([SVG]({svg}))")
        else:
            raise ValueError(f"unknown block {kind!r}")
    return "\n\n".join(parts) + "\n"


def to_html(blocks: list[Block], title: str) -> str:
    parts = [f"<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{html.escape(title)}</title>",
             f"<style>{CSS}</style>\n</head>\n<body>"]
    for b in blocks:
        kind = b[0]
        if kind in ("h1", "h2", "h3"):
            parts.append(f"<{kind}>{_inline_html(b[1])}</{kind}>")
        elif kind == "p":
            parts.append(f"<p>{_inline_html(b[1])}</p>")
        elif kind == "list":
            parts.append("<ul>" + "".join(f"<li>{_inline_html(x)}</li>" for x in b[1]) + "</ul>")
        elif kind == "table":
            headers, rows = b[1]
            head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
            body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
            parts.append(f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>{body}</tbody>\n</table>")
        elif kind == "figure":
            _, png, svg, caption = b
            parts.append(f"<figure><a href=\"{html.escape(png)}\"><img src=\"{html.escape(svg)}\" "
                         f"alt=\"{html.escape(caption)}\"></a><figcaption>{_inline_html(caption)}</figcaption></figure>")
        else:
            raise ValueError(f"unknown block {kind!r}")
    parts.append("</body>\n</html>\n")
    return "\n".join(parts)
