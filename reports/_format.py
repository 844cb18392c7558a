"""Number formatting and escaping shared by the Markdown, HTML and SVG renderers.

Everything here is pure and deterministic: the same input always gives the same string.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Sequence
from typing import Literal

MISSING = "-"
"""What a missing value looks like in Markdown and HTML tables."""

Align = Literal["left", "right"]

# Characters that could start emphasis, code, links, HTML or break a table cell. The
# underscore is left alone: intraword underscores (``learning_rate``) are not emphasis in
# CommonMark and escaping them would hurt terminal readability.
_MD_SPECIAL = re.compile(r"([\\`*\[\]<>|])")
_NEWLINES = re.compile(r"\r\n|\r|\n|\t")

PARAM_LABELS = {
    "unfrozen_layers": "unfrozen layers",
    "learning_rate": "learning rate",
    "dropout": "dropout",
    "weight_decay": "weight decay",
    "batchnorm": "BatchNorm mode",
    "l2sp": "L2-SP strength",
    "lr_decay": "layer-wise rate decay",
    "augment": "augmentation strength",
    "block_start": "block start (lowest unfrozen layer)",
    "lora_rank": "LoRA rank",
}
"""The one table of parameter display names; every text in reports names parameters so."""


_URL_PASSWORD = re.compile(r"^(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/@?#]*):(?P<pw>[^@/?#]*)@")
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")
URL_MASK = "***"


def mask_url(url: str) -> str:
    """The one password mask: ``scheme://user:***@host/...``.

    A URL without a password (or already masked) comes back unchanged; text that is not a URL
    comes back as ``<unparseable storage URL>``, never echoed.
    """
    match = _URL_PASSWORD.match(url)
    if match is not None:
        if match.group("pw") == URL_MASK:
            return url
        return f"{match.group('head')}:{URL_MASK}@{url[match.end() :]}"
    return url if _URL.match(url) else "<unparseable storage URL>"


def param_label(param: str) -> str:
    """``learning rate`` for ``learning_rate``; other names with spaces for underscores."""
    return PARAM_LABELS.get(param, param.replace("_", " "))


def fmt_num(value: float | int | None, missing: str = MISSING) -> str:
    """Short, stable text for a number: ints as is, floats with 4 significant digits."""
    if value is None:
        return missing
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    text = f"{value:.4g}"
    return "0" if text == "-0" else text


def fmt_signed(value: float) -> str:
    """Like :func:`fmt_num` but always with a sign (``+0.1``, ``-0.02``)."""
    text = fmt_num(value)
    return text if text.startswith("-") else f"+{text}"


def fmt_value(value: object, missing: str = MISSING) -> str:
    """Text for a trial parameter or attribute of any JSON-able type."""
    if value is None:
        return missing
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, (int, float)):
        return fmt_num(value, missing)
    return str(value)


def fmt_seconds(value: float | None, missing: str = MISSING) -> str:
    """Durations: whole seconds above 10 s, otherwise one decimal."""
    if value is None or not math.isfinite(value):
        return missing
    if abs(value) >= 10:
        return f"{value:.0f}"
    return f"{value:.1f}"


def truncate(text: str, limit: int) -> str:
    """Shorten ``text`` to at most ``limit`` characters, marking the cut with ``...``."""
    if len(text) <= limit:
        return text
    return text[: max(limit - 3, 0)].rstrip() + "..."


def one_line(text: str) -> str:
    """Collapse newlines and tabs to single spaces."""
    return _NEWLINES.sub(" ", text).strip()


def md_escape(text: object) -> str:
    """Escape untrusted text for inline Markdown (also safe inside a pipe-table cell).

    Newlines become spaces and Markdown punctuation (including ``|``, ``<`` and ``>``) is
    backslash-escaped, so the text cannot break a table row or inject HTML or links.
    """
    return _MD_SPECIAL.sub(r"\\\1", one_line(str(text)))


def md_table_code(text: object) -> str:
    """Inline code span for a pipe-table cell (hashes, URLs); falls back to escaping.

    Inside a GFM table a pipe must be escaped even within code, hence ``\\|``.
    """
    value = one_line(str(text))
    if "`" in value or not value:
        return md_escape(value)
    return "`" + value.replace("|", "\\|") + "`"


def html_escape(text: object) -> str:
    """HTML-escape untrusted text (quotes included, so it is safe in attributes)."""
    return html.escape(str(text), quote=True)


def md_table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    align: Sequence[Align] | None = None,
) -> str:
    """An aligned pipe table. Cells must already be escaped with :func:`md_escape`.

    Columns are padded to equal width so the table also reads well as plain text.
    """
    n_cols = len(headers)
    aligns: list[Align] = list(align) if align is not None else ["left"] * n_cols
    if len(aligns) != n_cols:
        raise ValueError(f"align has {len(aligns)} entries for {n_cols} columns")
    for row in rows:
        if len(row) != n_cols:
            raise ValueError(f"table row has {len(row)} cells for {n_cols} columns")
    widths = [max(3, len(h)) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))

    def line(cells: Sequence[str]) -> str:
        padded = [
            cell.rjust(widths[i]) if aligns[i] == "right" else cell.ljust(widths[i])
            for i, cell in enumerate(cells)
        ]
        return "| " + " | ".join(padded) + " |"

    rule = [
        "-" * (widths[i] - 1) + ":" if aligns[i] == "right" else "-" * widths[i]
        for i in range(n_cols)
    ]
    out = [line(headers), "| " + " | ".join(rule) + " |"]
    out.extend(line(row) for row in rows)
    return "\n".join(out)
