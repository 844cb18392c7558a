"""Document blocks shared by the study report and the comparison report.

A page is a list of :class:`Section` objects holding blocks; :func:`md_page` and
:func:`html_page` walk the same list, so the Markdown and HTML files always say the same
thing. All text in blocks is raw and escaped on output (``md_escape`` / ``html.escape``);
only :class:`Figure` SVG markup is trusted (it is escaped in ``reports._svg``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from thaw.reports._format import Align, html_escape, md_escape, md_table, md_table_code

Target = Literal["both", "md", "html"]

BAR_CHARS = 20
"""Width of a text bar in Markdown tables at 100%."""
BAR_PX = 160
"""Width of an HTML bar at 100%."""

CSS = """
body{font-family:Helvetica,Arial,sans-serif;color:#1a1a1a;background:#fff;max-width:1200px;
margin:2em auto;padding:0 1em;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:2px solid #1a1a1a;padding-bottom:.15em;
margin-top:1.8em}h3{font-size:1.1em;margin:1.4em 0 .3em}
.meta{color:#444;margin-top:0}.lead{font-size:1.15em;font-weight:bold}
.summary{border-left:4px solid #0072B2;padding:.1em 0 .1em 1em;background:#f3f8fc}
.note{border-left:4px solid #E69F00;padding:.1em 0 .1em 1em;background:#fdf6e6}
table{border-collapse:collapse;font-size:13px;margin:.6em 0}
th,td{border-bottom:1px solid #d0d0d0;padding:3px 8px;text-align:left;vertical-align:top}
th{border-bottom:2px solid #1a1a1a;white-space:nowrap}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.text{min-width:9em;max-width:28em;overflow-wrap:break-word}
td.bar{white-space:nowrap;font-variant-numeric:tabular-nums}
span.bar{display:inline-block;height:.8em;margin-right:6px;vertical-align:middle;
background:#0072B2}
span.bar.alt{background:#D55E00}
tr.state-pruned td{color:#4d4d4d}tr.state-fail td{color:#8f2a00}
tr.rank-1 td{font-weight:bold}
.table-wrap{overflow-x:auto}
.charts{display:flex;flex-wrap:wrap;gap:16px}
figure{margin:.5em 0}figcaption{font-size:13px;color:#333;max-width:780px}
svg.chart{max-width:100%;height:auto}
.diagnosis-body{border-left:4px solid #0072B2;padding-left:1em}
pre{white-space:pre-wrap}
nav.toc{font-size:14px;margin:.2em 0 .4em}nav.toc a{margin-right:.9em;white-space:nowrap}
section.answer p,section.answer ul{margin:.35em 0}section.answer li{margin:.15em 0}
section.answer h2{margin-top:.6em}.gloss{color:#444;font-size:.92em}
td.fold{min-width:6em;max-width:34em}
details summary{cursor:pointer;color:#0057a0;white-space:nowrap}
details dl{margin:.3em 0;display:grid;grid-template-columns:max-content minmax(0,1fr);gap:0 .8em}
details dt{font-weight:bold}details dd{margin:0;overflow-wrap:anywhere}
@media (max-width:640px){body{margin:.6em auto;padding:0 .5em}h1{font-size:1.3em}
table{font-size:12px}th,td{padding:2px 3px}th{white-space:normal}
td{overflow-wrap:anywhere}td.num{white-space:normal;overflow-wrap:normal}
td.text{min-width:0}td.fold{min-width:0}details summary{white-space:normal}
details dl{grid-template-columns:minmax(0,1fr)}}
@media print{body{max-width:none;margin:0;font-size:11pt}.table-wrap{overflow:visible}
figure,table{break-inside:avoid}h2,h3{break-after:avoid}}
""".strip()


@dataclass(frozen=True)
class Para:
    text: str
    lead: bool = False
    only: Target = "both"
    id: str | None = None
    cls: str | None = None
    """Extra HTML class (``summary``, ``note``)."""


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]
    only: Target = "both"
    id: str | None = None


@dataclass(frozen=True)
class Heading:
    """A sub-heading inside a section (``###`` / ``<h3>``)."""

    text: str
    only: Target = "both"
    id: str | None = None


@dataclass(frozen=True)
class Table:
    headers: tuple[str, ...]
    aligns: tuple[Align, ...]
    rows: tuple[tuple[str, ...], ...]
    row_classes: tuple[str, ...] = ()
    text_columns: frozenset[int] = frozenset()
    """Columns holding free text: wrapped in HTML."""
    code_cells: frozenset[tuple[int, int]] = frozenset()
    """``(row, column)`` cells shown as code (identifiers, hashes, URLs)."""
    bars: Mapping[tuple[int, int], tuple[float, bool]] = field(default_factory=dict)
    """``(row, column) -> (fraction 0..1, alternate colour)``: a bar drawn before the text."""
    only: Target = "both"
    id: str | None = None
    folds: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = ()
    """Per row ``(summary, ((label, text), ...))``: HTML adds a last column whose cell folds
    the pairs into ``<details>``; Markdown leaves them out (give it its own columns)."""
    fold_header: str = "details"


@dataclass(frozen=True)
class Figure:
    svg: str
    caption: str
    only: Target = "html"
    id: str | None = None


@dataclass(frozen=True)
class Figures:
    figures: tuple[Figure, ...]
    only: Target = "html"


Block = Para | Bullets | Heading | Table | Figure | Figures


@dataclass(frozen=True)
class Section:
    key: str
    title: str
    blocks: tuple[Block, ...] = field(default_factory=tuple)


def md_block(block: Block) -> str:
    if isinstance(block, Para):
        text = md_escape(block.text)
        return f"**{text}**" if block.lead else text
    if isinstance(block, Bullets):
        return "\n".join(f"- {md_escape(item)}" for item in block.items)
    if isinstance(block, Heading):
        return f"### {md_escape(block.text)}"
    if isinstance(block, Table):
        return md_table(
            [md_escape(h) for h in block.headers],
            [
                [_md_cell(block, r, c, cell) for c, cell in enumerate(row)]
                for r, row in enumerate(block.rows)
            ],
            block.aligns,
        )
    return ""


def _md_cell(block: Table, r: int, c: int, cell: str) -> str:
    if (r, c) in block.code_cells:
        return md_table_code(cell)
    text = md_escape(cell)
    bar = block.bars.get((r, c))
    if bar is not None:
        n = round(max(0.0, min(1.0, bar[0])) * BAR_CHARS)
        text = f"{text} {'█' * n}".rstrip()
    return text


def html_block(block: Block) -> str:
    if isinstance(block, Para):
        classes = " ".join(c for c in ("lead" if block.lead else None, block.cls) if c)
        attrs = _attrs(block.id, classes)
        return f"<p{attrs}>{html_escape(block.text)}</p>"
    if isinstance(block, Bullets):
        items = "".join(f"<li>{html_escape(item)}</li>" for item in block.items)
        return f"<ul{_attrs(block.id)}>{items}</ul>"
    if isinstance(block, Heading):
        return f"<h3{_attrs(block.id)}>{html_escape(block.text)}</h3>"
    if isinstance(block, Table):
        return _html_table(block)
    if isinstance(block, Figure):
        return _html_figure(block)
    return '<div class="charts">\n' + "\n".join(_html_figure(f) for f in block.figures) + "\n</div>"


def md_page(title: str, subtitle: str, sections: list[Section]) -> str:
    out = [f"# {md_escape(title)}", md_escape(subtitle)]
    for section in sections:
        out.append(f"## {md_escape(section.title)}")
        out += [md_block(block) for block in section.blocks if block.only != "html"]
    return "\n\n".join(part for part in out if part) + "\n"


def html_head(title: str, subtitle: str, toc: tuple[tuple[str, str], ...] = ()) -> list[str]:
    """Page head and header; ``toc`` is ``(section id, title)`` pairs for a contents line."""
    nav = (
        [
            '<nav class="toc" aria-label="Contents">Contents: '
            + " ".join(
                f'<a href="#{html_escape(key)}">{html_escape(text)}</a>' for key, text in toc
            )
            + "</nav>"
        ]
        if toc
        else []
    )
    return [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html_escape(title)}</title>",
        f"<style>\n{CSS}\n</style>",
        "</head>",
        "<body>",
        f'<header><h1>{html_escape(title)}</h1><p class="meta">'
        f"{html_escape(subtitle)}</p>{''.join(nav)}</header>",
    ]


def html_section(section: Section) -> list[str]:
    key = html_escape(section.key)
    out = [f'<section class="{key}" id="{key}">', f"<h2>{html_escape(section.title)}</h2>"]
    out += [html_block(block) for block in section.blocks if block.only != "md"]
    out.append("</section>")
    return out


def html_page(title: str, subtitle: str, sections: list[Section]) -> str:
    out = html_head(title, subtitle)
    for section in sections:
        out += html_section(section)
    out += ["</body>", "</html>"]
    return "\n".join(out) + "\n"


def _attrs(id_: str | None, classes: str | None = None) -> str:
    text = f' id="{html_escape(id_)}"' if id_ else ""
    return text + (f' class="{html_escape(classes)}"' if classes else "")


def _html_figure(figure: Figure) -> str:
    if not figure.svg:
        return f"<p>{html_escape(figure.caption)} (nothing to plot)</p>"
    return (
        f"<figure{_attrs(figure.id)}>\n{figure.svg}\n"
        f"<figcaption>{html_escape(figure.caption)}</figcaption>\n</figure>"
    )


def _fold_cell(summary: str, items: tuple[tuple[str, str], ...]) -> str:
    if not items:
        return '<td class="fold"></td>'
    pairs = "".join(
        f"<dt>{html_escape(label)}</dt><dd>{html_escape(text)}</dd>" for label, text in items
    )
    return (
        f'<td class="fold"><details><summary>{html_escape(summary)}</summary>'
        f"<dl>{pairs}</dl></details></td>"
    )


def _html_table(table: Table) -> str:
    def cls(i: int) -> str:
        if i in table.text_columns:
            return ' class="text"'
        return ' class="num"' if table.aligns[i] == "right" else ""

    def cell(r: int, i: int, text: str) -> str:
        if (r, i) in table.code_cells:
            return f"<td{cls(i)}><code>{html_escape(text)}</code></td>"
        bar = table.bars.get((r, i))
        if bar is not None:
            width = round(max(0.0, min(1.0, bar[0])) * BAR_PX)
            alt = " alt" if bar[1] else ""
            return (
                f'<td class="bar"><span class="bar{alt}" style="width:{width}px"></span>'
                f"{html_escape(text)}</td>"
            )
        return f"<td{cls(i)}>{html_escape(text)}</td>"

    head = "".join(f"<th{cls(i)}>{html_escape(h)}</th>" for i, h in enumerate(table.headers))
    if table.folds:
        head += f"<th>{html_escape(table.fold_header)}</th>"
    body = []
    for r, row in enumerate(table.rows):
        row_cls = f' class="{html_escape(table.row_classes[r])}"' if table.row_classes else ""
        cells = "".join(cell(r, i, c) for i, c in enumerate(row))
        if table.folds:
            cells += _fold_cell(*table.folds[r])
        body.append(f"<tr{row_cls}>{cells}</tr>")
    return (
        f'<div class="table-wrap"><table{_attrs(table.id)}>\n'
        f"<thead><tr>{head}</tr></thead>\n<tbody>\n"
        + "\n".join(body)
        + "\n</tbody>\n</table></div>"
    )
