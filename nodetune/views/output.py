"""Writing results: JSON for tools, text for people (rich is imported only when used).

Text comes in two formats. `table` draws boxed tables sized to the terminal; `plain` prints
aligned columns without box drawing, for files, `less` and CI logs. The default is `table` on
a terminal and `plain` when stdout is piped or the locale is not UTF-8; `--format` picks one.
Under a non-UTF-8 locale (LANG=C, LC_ALL=C) every character written is ASCII.

Widths: the terminal's on a terminal; when piped, COLUMNS if set, else 120 for `table` and no
limit for `plain` (one line per row). Ids, subjects, addresses, values and CPU lists never
break inside a token: a table too wide for its width wraps its cells at spaces, and prose
columns (explanations, fixes) may fold; if even that does not fit, the table runs wider than
the width rather than cutting a value.
"""

from __future__ import annotations

import json
import os
import re
import sys
import textwrap
from itertools import zip_longest
from typing import IO, TYPE_CHECKING, Any, Final

from nodetune.facts.record import record
from nodetune.views.ascii import ascii_only, to_ascii

if TYPE_CHECKING:
    from collections.abc import Iterable

FORMATS: Final = ("table", "plain")
PIPED_WIDTH: Final = 120  # `table` output when piped and COLUMNS is not set
UNLIMITED: Final = 100_000  # `plain` output when piped and COLUMNS is not set
PROSE_MIN: Final = 24  # a prose column keeps at least this many characters


def emit_json(doc: dict[str, Any], schema: str) -> None:
    """Print a JSON document whose first key is its schema version."""
    out = {"schema": schema, **{k: v for k, v in doc.items() if k != "schema"}}
    # one write: json.dump writes every token on its own (~0.3 s for a 10,000-node fleet)
    sys.stdout.write(json_text(out) + "\n")


def json_text(doc: Any, stream: IO[str] | None = None) -> str:
    """JSON as `--json` prints it: indented for a person at a terminal; compact, on one line,
    for a pipe or a file. `indent` makes json fall back from its C encoder to the pure-Python
    one (3-6x the time on a 2,000-device node's facts); a program reading the document does
    not need the indentation, and `jq .` restores it."""
    if _is_tty(stream):
        return json.dumps(doc, indent=2, default=str)
    return json.dumps(doc, separators=(",", ":"), default=str)


# -- locale and format ------------------------------------------------------------------------

def _is_tty(stream: IO[str] | None = None) -> bool:
    stream = sys.stdout if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _columns_env() -> int | None:
    try:
        value = int(os.environ.get("COLUMNS", ""))
    except ValueError:
        return None
    return value if value > 0 else None


@record(frozen=True)
class View:
    """How text is written: the format, ASCII only or not, and the width (None: no limit)."""

    fmt: str
    ascii: bool
    width: int | None
    tty: bool

    @property
    def plain(self) -> bool:
        return self.fmt == "plain"


def view(fmt: str | None = None, stderr: bool = False) -> View:
    """The view for stdout (or stderr): `fmt` as given by --format, else by tty and locale."""
    tty = _is_tty(sys.stderr if stderr else sys.stdout)
    ascii = ascii_only()
    chosen = fmt or ("table" if tty and not ascii else "plain")
    # on a terminal, None: the terminal's width, read by rich
    width = None if tty else _columns_env() or (UNLIMITED if chosen == "plain" else PIPED_WIDTH)
    return View(chosen, ascii, width, tty)


# -- the stream -----------------------------------------------------------------------------

class _Sink:
    """The stream rich writes to: ASCII under a non-UTF-8 locale, no trailing blanks when
    piped. Looks up sys.stdout at each write, as click's test runner replaces it."""

    def __init__(self, v: View, stderr: bool) -> None:
        self._view = v
        self._stderr = stderr

    @property
    def _stream(self) -> IO[str]:
        return sys.stderr if self._stderr else sys.stdout

    @property
    def encoding(self) -> str:
        return "ascii" if self._view.ascii else "utf-8"

    def write(self, text: str) -> int:
        if self._view.ascii:
            text = to_ascii(text)
        if not self._view.tty:
            text = re.sub(r"[ \t]+(?=\n)", "", text)
        return self._stream.write(text)

    def flush(self) -> None:
        self._stream.flush()

    def isatty(self) -> bool:
        return _is_tty(self._stream)

    def fileno(self) -> int:
        return self._stream.fileno()


def console(stderr: bool = False, v: View | None = None) -> Any:
    """A rich Console for `v`; without one, rich's own width (the terminal's, else COLUMNS,
    else 80), ASCII only under a non-UTF-8 locale."""
    # deferred: rich costs 30-45 ms at start-up; only text output needs it, --json does not
    from rich.console import Console

    if v is None:
        v = View("table", ascii_only(), None, _is_tty(sys.stderr if stderr else sys.stdout))
    sink: Any = _Sink(v, stderr)  # file-like: write, flush, isatty, fileno, encoding
    return Console(file=sink, width=v.width, highlight=False, soft_wrap=False,
                   emoji=False)


def write_text(text: str, v: View | None = None) -> None:
    """Write plain text to stdout, ASCII only under a non-UTF-8 locale."""
    v = v or view()
    sys.stdout.write(to_ascii(text) if v.ascii else text)


# -- tables -----------------------------------------------------------------------------------

def fit(minimums: list[int], maximums: list[int], weights: list[int], room: int) -> list[int]:
    """Column widths: natural widths when they fit in `room`, else each column from its
    minimum, the space left shared by weight (no column beyond its natural width); when
    even the minimums do not fit, the minimums."""
    if sum(maximums) <= room:
        return list(maximums)
    widths = list(minimums)
    spare = room - sum(widths)
    while spare > 0:
        open_ = [i for i, w in enumerate(widths) if w < maximums[i]]
        if not open_:
            break
        total = sum(weights[i] for i in open_) or len(open_)
        given = 0
        for i in open_:
            share = max(1, spare * (weights[i] or 1) // total)
            add = min(share, maximums[i] - widths[i], spare - given)
            widths[i] += add
            given += add
            if given >= spare:
                break
        if not given:
            break
        spare -= given
    return widths


def fit_table(out: Any, table: Any, v: View, prose: Iterable[str] = ()) -> int:
    """Give every column of a rich Table a width from `fit` (a word never wider than its
    column, except in the `prose` columns, named by header; `plain` drops the box drawing);
    return the width the table needs."""
    # deferred: rich costs 30-45 ms at start-up; only text output needs it, --json does not
    from rich.measure import Measurement

    prose = set(prose)
    if v.plain:
        table.box = None
        table.show_edge = False
        table.expand = False
        table.show_lines = False
        table.pad_edge = False
        table.padding = (0, 2, 0, 0)
    columns = table.columns
    if not columns:
        return 0
    options = out.options.update(width=UNLIMITED)
    left, right = table.padding[3], table.padding[1]
    minimums, maximums, weights, pads = [], [], [], []
    for i, column in enumerate(columns):
        pad = (0 if i == 0 and not table.pad_edge else left) + (
            0 if i == len(columns) - 1 and not table.pad_edge else right)
        cells = [column.header] if table.show_header else []
        cells += list(column.cells)
        lo, hi = 1, 1
        for cell in cells:
            renderable = out.render_str(cell) if isinstance(cell, str) else cell
            m = Measurement.get(out, options, renderable)
            lo, hi = max(lo, m.minimum), max(hi, m.maximum)
        if column.header in prose:
            lo = min(hi, PROSE_MIN)
            column.overflow = "fold"
        elif column.no_wrap:
            lo = hi
        minimums.append(lo)
        maximums.append(hi)
        weights.append(column.ratio or 1)
        pads.append(pad)
        column.ratio = None
        column.min_width = column.max_width = None
    borders = (2 if table.box and table.show_edge else 0) + (
        len(columns) - 1 if table.box else 0)
    room = out.width - borders - sum(pads)
    if table.expand and sum(maximums) < room:
        # a wide terminal: stretch the prose columns rather than every column
        flex = [i for i, c in enumerate(columns) if c.header in prose] or [len(columns) - 1]
        extra = room - sum(maximums)
        for i in flex:
            maximums[i] += extra // len(flex)
    widths = fit(minimums, maximums, weights, room)
    for column, width in zip(columns, widths, strict=True):
        column.width = width
    table.expand = False
    return sum(widths) + borders + sum(pads)


def print_table(out: Any, table: Any, v: View, prose: Iterable[str] = (),
                stack: int = 0) -> None:
    """Print a rich Table laid out by `fit_table`. A table that needs more than the width runs
    wider rather than cutting a value in two; with `stack`, it is printed as stacked records
    instead (`stacked_lines`: the first `stack` columns title each row)."""
    if not hasattr(table, "columns"):  # a Group of tables: each laid out on its own
        for part in getattr(table, "renderables", [table]):
            if hasattr(part, "columns"):
                print_table(out, part, v, prose, stack)
            else:
                out.print(part)
        return
    needed = fit_table(out, table, v, prose)
    if needed <= out.width:
        out.print(table)
        return
    if stack and len(table.columns) > 2:  # a key-value table stays one: it runs wider
        if table.title:
            print_line(out, _plain(out, table.title))
        headers = [_plain(out, c.header) for c in table.columns]
        rows = [[_plain(out, cell) for cell in cells]
                for cells in zip(*(c.cells for c in table.columns), strict=True)]
        for line in stacked_lines(headers, rows, stack, out.width):
            print_line(out, line)
        return
    saved = out.width
    out.width = needed
    try:
        out.print(table)
    finally:
        out.width = saved


def _plain(out: Any, cell: Any) -> str:
    """A cell's text without markup or style."""
    if isinstance(cell, str):
        return str(out.render_str(cell).plain)
    return str(getattr(cell, "plain", cell))


def stacked_lines(headers: list[str], rows: list[list[str]], title: int,
                  room: int) -> list[str]:
    """A table too wide for `room` as one record per row: its first `title` cells on a line,
    then the other non-empty cells as `header: value`, two spaces apart, indented, wrapped
    between pairs (a pair wider than the line wraps at spaces): no value is ever split."""
    out = []
    for row in rows:
        out.append("  ".join(c for c in row[:title] if c).rstrip() or "-")
        line = ""
        for header, cell in zip(headers[title:], row[title:], strict=True):
            if not cell.strip():
                continue
            pair = f"{header}: {'; '.join(p for p in cell.splitlines() if p.strip())}"
            if line and len(line) + 2 + len(pair) <= room - 2:
                line += "  " + pair
                continue
            if line:
                out.append("  " + line)
            line = pair
            if len(pair) > room - 2:  # alone on its lines, the rest indented once more
                parts = textwrap.wrap(pair, max(room - 4, 1), break_long_words=False,
                                      break_on_hyphens=False)
                out += ["  " + parts[0]] + ["    " + p for p in parts[1:]]
                line = ""
        if line:
            out.append("  " + line)
    return out


def print_line(out: Any, text: str) -> None:
    """One line as it is: a line wider than the terminal is left to the terminal to wrap."""
    out.print(text, markup=False, highlight=False, soft_wrap=True)


def grid_lines(rows: list[list[str]], headers: tuple[str, ...] | None, room: int | None,
               prose: tuple[int, ...] = ()) -> list[str]:
    """Rows as aligned columns, two spaces apart, no box drawing. With `room` the cells wrap
    at spaces to fit (never inside a word, except in the `prose` columns)."""
    return [line for row in grid_rows(rows, headers, room, prose) for line in row]


def grid_rows(rows: list[list[str]], headers: tuple[str, ...] | None, room: int | None,
              prose: tuple[int, ...] = ()) -> list[list[str]]:
    """The lines of each row (the header first, if any), laid out as `grid_lines` says."""
    table = [list(headers), *rows] if headers else rows
    if not table:
        return []
    count = len(table[0])
    natural = [max((len(line) for r in table for line in r[i].split("\n")), default=0)
               for i in range(count)]
    if room is None:
        widths = natural
    else:
        least = [min(natural[i], PROSE_MIN) if i in prose else
                 max((len(w) for r in table for w in r[i].split()), default=0)
                 for i in range(count)]
        widths = fit(least, natural, [1] * count, room - 2 * (count - 1))
    out = []
    for row in table:
        cells = [_wrap(cell, width, i in prose) for i, (cell, width) in
                 enumerate(zip(row, widths, strict=True))]
        out.append(["  ".join(p.ljust(w) for p, w in zip(parts, widths, strict=True)).rstrip()
                    for parts in zip_longest(*cells, fillvalue="")])
    return out


def _wrap(cell: str, width: int, fold: bool) -> list[str]:
    lines: list[str] = []
    for paragraph in cell.split("\n"):
        lines += textwrap.wrap(paragraph, max(width, 1), break_long_words=fold,
                               break_on_hyphens=False) or [""]
    return lines


# -- sources ----------------------------------------------------------------------------------

_SOURCE_LINE = re.compile(r"^([A-Z][0-9]+) (.+?)[;.]?$", re.MULTILINE)
_CITED = re.compile(r"\[([A-Z][0-9]+(?:, ?[A-Z][0-9]+)*)\]")


def source_titles() -> dict[str, str]:
    """Source key -> title or address, from the shipped profiles/SOURCES.md."""
    # imported here: only views that print a legend need it
    from nodetune.node.resources import data_dir

    try:
        text = (data_dir("profiles") / "SOURCES.md").read_text(encoding="utf-8")
    except OSError:
        return {}
    return dict(_SOURCE_LINE.findall(text))


def cited(texts: Iterable[str]) -> list[str]:
    """The source keys cited as [K1] or [K1, K2] in `texts`, in order of first citation."""
    keys: dict[str, None] = {}
    for text in texts:
        for group in _CITED.findall(text or ""):
            for key in re.split(r", ?", group):
                keys.setdefault(key, None)
    return list(keys)


def legend_lines(keys: Iterable[str], width: int | None = None) -> list[str]:
    """`Sources:` then one `  [K1] title` line per key (a key SOURCES.md lacks says so);
    with `width`, a long title wraps at spaces under itself."""
    keys = list(keys)
    if not keys:
        return []
    titles = source_titles()
    pad = max(len(k) for k in keys) + 2
    lines = ["Sources:"]
    for key in keys:
        title = titles.get(key, "(not in SOURCES.md)")
        indent = " " * (pad + 3)
        parts = (textwrap.wrap(title, width - len(indent), break_long_words=False,
                               break_on_hyphens=False) if width and width < UNLIMITED
                 else [title]) or [""]
        lines.append(f"  {'[' + key + ']':<{pad}} {parts[0]}")
        lines += [indent + part for part in parts[1:]]
    return lines
