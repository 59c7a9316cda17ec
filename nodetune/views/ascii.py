"""ASCII output under a locale that is not UTF-8 (LANG=C, LC_ALL=C).

Kept apart from nodetune.views.output, and free of dataclasses, because `nodetune check`'s
fast path imports it before every job.
"""

from __future__ import annotations

import os
import re
import sys
import unicodedata
from typing import Final


def ascii_only(environ: dict[str, str] | None = None) -> bool:
    """True under a locale that is not UTF-8 (LANG=C, LC_ALL=C, POSIX, latin-1, none at all).

    Python coerces the C locale to C.UTF-8 (PEP 538) and sets LC_CTYPE=C.UTF-8 in the
    environment when it does, switching itself to UTF-8 mode (PEP 540); such an LC_CTYPE
    says nothing of the terminal, so it is not counted.
    """
    env = os.environ if environ is None else environ
    coerced = bool(sys.flags.utf8_mode) and "PYTHONUTF8" not in env
    for var in ("LC_ALL", "LC_CTYPE", "LANG"):
        value = env.get(var)
        if not value or (var == "LC_CTYPE" and coerced and value == "C.UTF-8"):
            continue
        return re.search(r"utf-?8", value, re.IGNORECASE) is None
    return True


# written as escapes: the characters themselves look like their ASCII replacements
_ASCII: Final = {"\u2026": "...", "\u2013": "-", "\u2014": "-", "\u2018": "'", "\u2019": "'",
                 "\u201c": '"', "\u201d": '"', "\u2192": "->", "\u2190": "<-",
                 "\u2194": "<->", "\u21d2": "=>", "\u2265": ">=", "\u2264": "<=",
                 "\u2260": "!=", "\u00d7": "x", "\u00b7": "-", "\u2022": "*", "\u00b5": "u",
                 "\u00b0": " deg", "\u00b1": "+/-", "\u2713": "ok", "\u2717": "x",
                 "\u00a0": " "}


def _ascii_char(ch: str) -> str:
    if ch in _ASCII:
        return _ASCII[ch]
    if "\u2500" <= ch <= "\u257f":  # box drawing
        name = unicodedata.name(ch, "")  # "BOX DRAWINGS HEAVY DOWN AND HORIZONTAL": a joint
        if " AND " in name:
            return "+"
        return "-" if "HORIZONTAL" in name else "|" if "VERTICAL" in name else "+"
    if "\u2580" <= ch <= "\u259f":  # block elements: bars
        return "#"
    plain = unicodedata.normalize("NFKD", ch).encode("ascii", "ignore").decode()
    return plain or "?"


def to_ascii(text: str) -> str:
    """`text` with every non-ASCII character replaced by an ASCII look-alike (or '?')."""
    if text.isascii():
        return text
    return "".join(ch if ch.isascii() else _ascii_char(ch) for ch in text)
