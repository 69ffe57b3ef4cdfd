"""Self-contained HTML pages: inline CSS, images as base64 data URIs, no scripts, no external references.

The reports embed reconstructions of patient images, so a page must open offline, in a locked-down
browser, and be written readable by its owner only. Every text that reaches a page is escaped unless it
is already :class:`Html` (markup built by these helpers), because site names and reasons come from
clients and from files a client influenced.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from gradinv.private_files import write_private_text  # noqa: F401 - part of this module's page-writing API

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; margin: 0;
       color: #1d2430; background: #f4f5f7; line-height: 1.45; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 28px 64px; }
header.page { background: #1d2b45; color: #fff; padding: 22px 28px; }
header.page h1 { margin: 0 0 4px; font-size: 1.6em; }
header.page p { margin: 0; color: #c9d3e6; }
nav.toc { background: #fff; border: 1px solid #d9dde5; border-radius: 6px; padding: 10px 16px; margin: 18px 0;
          display: flex; flex-wrap: wrap; gap: 4px 18px; }
nav.toc a { color: #1f4f96; text-decoration: none; white-space: nowrap; }
section.block { background: #fff; border: 1px solid #d9dde5; border-radius: 6px; padding: 8px 20px 16px;
                margin: 18px 0; }
h2 { font-size: 1.3em; border-bottom: 1px solid #e3e6ec; padding-bottom: 6px; }
h3 { font-size: 1.1em; margin: 18px 0 8px; }
table { border-collapse: collapse; font-size: 0.88em; margin: 6px 0 12px; }
th, td { border: 1px solid #d9dde5; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #eef1f6; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.scroll { overflow-x: auto; max-width: 100%; }
tr.block-row td { background: #fde4e2; }
tr.problem-row td { background: #fff3cd; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 0.8em; font-weight: 600;
         color: #fff; vertical-align: middle; }
.badge.good { background: #2e7d4f; }
.badge.bad { background: #c62828; }
.badge.warn { background: #b26a00; }
.badge.info { background: #5c6b80; }
.note { background: #eef4fd; border-left: 4px solid #5a8dd6; padding: 8px 12px; margin: 10px 0; }
.warning { background: #fff3cd; border-left: 4px solid #d69e00; padding: 8px 12px; margin: 10px 0; }
.alert { background: #fde4e2; border-left: 4px solid #c62828; padding: 8px 12px; margin: 10px 0; }
.card { border: 1px solid #d9dde5; border-radius: 6px; padding: 4px 16px 10px; margin: 14px 0; }
.card.blocked { border: 2px solid #c62828; }
.card.problem { border: 2px solid #d69e00; }
.card-body { display: flex; flex-wrap: wrap; gap: 18px; align-items: flex-start; }
.card-body > div { min-width: 260px; max-width: 600px; }
td a, table.nowrap td { white-space: nowrap; }
figure { margin: 6px 0; }
figcaption { font-size: 0.85em; color: #4a5568; margin-top: 4px; }
img.grid { image-rendering: pixelated; border: 1px solid #d9dde5; background: #000; max-width: 100%; }
img.plot { max-width: 100%; border: 1px solid #e3e6ec; }
.plots { display: flex; flex-wrap: wrap; gap: 12px; }
.muted { color: #6b7585; }
code { background: #eef1f6; padding: 0 4px; border-radius: 3px; }
"""


class Html(str):
    """Markup that is safe to embed as is (built by these helpers, with every piece of text escaped).

    Concatenating with ``+`` keeps the result :class:`Html` and escapes a plain-text operand.
    """

    def __add__(self, other: object) -> Html:
        return Html(str.__add__(self, escape(other)))

    def __radd__(self, other: object) -> Html:
        return Html(str.__add__(escape(other), self))


def escape(value: object) -> Html:
    """``value`` as HTML text; :class:`Html` passes through unchanged."""
    if isinstance(value, Html):
        return value
    return Html(html.escape(str(value), quote=True))


def join(parts: Iterable[object], separator: str = "") -> Html:
    """Concatenate escaped parts."""
    return Html(separator.join(escape(part) for part in parts))


def element(tag: str, content: object = "", **attributes: object) -> Html:
    """``<tag attr="...">content</tag>``; ``class_`` is written as ``class``, ``None`` attributes are left out."""
    rendered = "".join(
        f' {name.rstrip("_").replace("_", "-")}="{escape(value)}"'
        for name, value in attributes.items()
        if value is not None
    )
    return Html(f"<{tag}{rendered}>{escape(content)}</{tag}>")


def png_data_uri(png: bytes) -> str:
    """A ``data:image/png;base64,...`` URI embedding the PNG bytes."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def image(png: bytes, alt: str, css_class: str, width_px: int | None = None) -> Html:
    """An embedded PNG image; ``width_px`` sets the displayed width (``max-width`` still fits the page)."""
    width = f' style="width:{int(width_px)}px"' if width_px else ""
    return Html(f'<img class="{escape(css_class)}" alt="{escape(alt)}"{width} src="{png_data_uri(png)}">')


def badge(text: str, tone: str) -> Html:
    """A coloured label; ``tone`` is one of good, bad, warn, info."""
    return element("span", text, class_=f"badge {tone}")


def paragraph(*parts: object, css_class: str | None = None) -> Html:
    """A ``<p>`` (or a boxed ``<div>`` when ``css_class`` is note, warning or alert) of escaped parts."""
    return element("div" if css_class else "p", join(parts), class_=css_class)


def table(
    headers: Sequence[object],
    rows: Iterable[Sequence[object]],
    row_classes: Iterable[str | None] | None = None,
    numeric_columns: Iterable[int] = (),
    nowrap: bool = False,
) -> Html:
    """A table in a horizontally scrollable box; ``row_classes`` highlights rows, numeric columns align right.

    ``nowrap`` keeps every cell on one line (wide data tables read better scrolled than wrapped).
    """
    numeric = set(numeric_columns)
    classes = list(row_classes) if row_classes is not None else []
    head = element("tr", join(element("th", h) for h in headers))
    body = []
    for index, row in enumerate(rows):
        cells = join(element("td", cell, class_="num" if i in numeric else None) for i, cell in enumerate(row))
        body.append(element("tr", cells, class_=classes[index] if index < len(classes) else None))
    content = element("thead", head) + element("tbody", join(body))
    return element("div", element("table", content, class_="nowrap" if nowrap else None), class_="scroll")


def key_value_table(items: Iterable[tuple[object, object]]) -> Html:
    """A two-column table of names and values."""
    return element(
        "table", join(element("tr", element("th", key) + element("td", value)) for key, value in items)
    )


def anchor_id(*parts: object) -> str:
    """An element id made of ``parts`` (site names may hold any character)."""
    return re.sub(r"[^a-z0-9]+", "-", "-".join(str(p) for p in parts).lower()).strip("-") or "section"


class HtmlPage:
    """One self-contained page: a header, a table of contents and sections added in order."""

    def __init__(self, title: str, subtitle: str = "") -> None:
        self.title = title
        self.subtitle = subtitle
        self._sections: list[tuple[str, str, Html]] = []

    def add_section(self, heading: str, body: Html, section_id: str | None = None) -> str:
        """Append a section and list it in the table of contents; returns its id (for ``#id`` links)."""
        taken = {existing_id for existing_id, _, _ in self._sections}
        base_id = section_id or anchor_id(heading)
        unique_id, counter = base_id, 2
        while unique_id in taken:
            unique_id, counter = f"{base_id}-{counter}", counter + 1
        self._sections.append((unique_id, heading, body))
        return unique_id

    def render(self) -> str:
        """The complete HTML document."""
        toc = element("nav", join(element("a", heading, href=f"#{sid}") for sid, heading, _ in self._sections),
                      class_="toc")
        sections = join(
            element("section", element("h2", heading) + body, id=sid, class_="block")
            for sid, heading, body in self._sections
        )
        header = element("header", element("h1", self.title) + paragraph(self.subtitle), class_="page")
        return (
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{escape(self.title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
            f"{header}\n<main>\n{toc}\n{sections}\n</main>\n</body>\n</html>\n"
        )

    def write(self, path: str | Path) -> Path:
        """Write the page, readable by its owner only (see :func:`write_private_text`)."""
        return write_private_text(Path(path), self.render())
