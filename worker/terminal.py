"""What a person reads in a terminal and types into it: data shown, never obeyed; tables that fit; typos refused.

Names, reasons and ids come from Salesforce, Zendesk, Slack and the people who type them, so they are data,
never markup or terminal control: every cell and message that carries them goes through `plain` (or `clean`
for a plain `str`), as Slack's text goes through the Slack client's `escape_text`. Only presentation lives
here: the rows come from the module that owns their table (`scoring.latest`), so the same facts print the same
way wherever a person reads them (the commands, the demo).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from rich import box
from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, JustifyMethod, RenderResult
from rich.table import Table
from rich.text import Text

from worker.errors import HealthbeatError

# -- data as text -------------------------------------------------------------------------------------------

_LINE_BREAKS = re.compile("[\t\n\v\f\r\x1c-\x1e\x85\u2028\u2029]+")
"""Breaks and tabs read as one space: a name or reason stays on its line, so it cannot forge another line."""
_UNSHOWABLE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
"""C0 and C1 controls (ESC starts a terminal escape sequence; 0x9B is a one-byte CSI), the bidirectional marks,
embeddings, overrides and isolates that reorder what follows them on screen (U+202E shows "exe.txt" for
"txt.exe"), and lone surrogates, which cannot be written at all. Everything else printable stays, in any
script."""


def clean(value: object) -> str:
    """`value` as text a terminal shows as it is: line breaks become spaces, control characters go."""
    text = "" if value is None else str(value)
    return _UNSHOWABLE.sub("", _LINE_BREAKS.sub(" ", text))


def plain(value: object, style: str = "") -> Text:
    """`value` as a table cell or a piece of a message: a rich `Text`, which is never read as markup (so
    `[/bar]` cannot crash the table and `[link=...]` cannot hide a link), with `clean`'s characters."""
    return Text(clean(value), style=style)


def error_text(message: str) -> Text:
    """A one-line refusal in red, whatever the values quoted in it contain."""
    return plain(message, "red")


def counted(count: float, word: str, plural: str | None = None) -> str:
    """`1 day`, `2 days`: a count with its noun agreeing, so output never says "over 1 days"."""
    return f"{count:g} {word if count == 1 else plural or word + 's'}"


def spreadsheet_safe(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Rows for `--format csv` with every text cell that a spreadsheet would run as a formula made inert by a
    leading `'` (OWASP, "CSV Injection": cells starting with = + - @ tab or carriage return).

    An account name or a quarantined ticket is written by people outside the company; opened in Excel or
    Sheets, `=HYPERLINK(...)` or `@SUM(...)` in a cell would run. CSV goes to spreadsheets more than to
    programs, so it carries the guard; `--format json` is the exact copy for programs. Numbers stay numbers
    (a negative number is not a formula) and every other text is left exactly as stored.
    """
    return [{key: f"'{value}" if isinstance(value, str) and value[:1] in _FORMULA_START else value
             for key, value in row.items()} for row in rows]


_FORMULA_START: Final = frozenset("=+-@\t\r")


def for_format(rows: list[dict[str, Any]], fmt: str) -> list[dict[str, Any]]:
    """The rows to emit in `fmt`: json exact, csv `spreadsheet_safe`."""
    return spreadsheet_safe(rows) if fmt == "csv" else rows


# -- tables that fit the terminal -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    """One column of a `FittedTable`.

    `grows` marks the free text (a reason) that takes the room the others leave and wraps within it; the
    other columns keep their values on one line, wrapping only past `max_width` when room is short (names can
    be long), and their headers wrap at spaces. When the terminal is too narrow for every column and
    `min_room` characters of the growing one, the columns with the highest `hide` go first (0: always shown).
    """

    header: str
    justify: JustifyMethod = "left"
    grows: bool = False
    max_width: int | None = None
    hide: int = 0
    min_room: int = 30


Cell = Text | str | None


class FittedTable:
    """A table laid out for the width it is printed at (an 80-column terminal, a pipe, a wide screen): the
    growing column gets the room, short values are never broken, columns that do not fit are left out and
    named in the caption, and rows are set apart by a blank line when most of them wrap. Lines are drawn only
    under the header, so the room goes to the data. Cells are data (`plain`), never markup; a `Text` keeps
    its style."""

    def __init__(self, title: str, columns: Sequence[Column], rows: Iterable[Sequence[Cell]], *,
                 hint: str = "") -> None:
        self.title = title
        self.columns = tuple(columns)
        self.rows = [[cell if isinstance(cell, Text) else plain(cell) for cell in row] for row in rows]
        self.hint = hint
        self.natural = [self._natural(i, column) for i, column in enumerate(self.columns)]
        self.narrow = [min(width, column.max_width or width)
                       for width, column in zip(self.natural, self.columns, strict=True)]

    def _natural(self, index: int, column: Column) -> int:
        """A growing column's natural width; any other's: its longest value or its header's longest word, so a
        header may wrap but a value is never broken."""
        longest = max([0, *(row[index].cell_len for row in self.rows)])
        if column.grows:
            return max(longest, cell_len(column.header))
        return max(longest, *(cell_len(word) for word in column.header.split()))

    def _fixed(self, indices: Sequence[int], widths: Sequence[int]) -> int:
        """The width of these columns but the growing ones, with the space between columns."""
        between = 3 * len(indices) - 3  # one space of padding each side and a separator, none at the edges
        return between + sum(widths[i] for i in indices if not self.columns[i].grows)

    def shown(self, width: int) -> list[int]:
        """The columns that fit in `width`: all of them, or fewer, dropping the highest `hide` first."""
        def needed(indices: list[int]) -> int:
            growing = sum(min(self.columns[i].min_room, self.natural[i]) for i in indices if self.columns[i].grows)
            return self._fixed(indices, self.narrow) + growing

        indices = list(range(len(self.columns)))
        for level in sorted({c.hide for c in self.columns if c.hide}, reverse=True):
            if needed(indices) <= width:
                break
            indices = [i for i in indices if self.columns[i].hide != level]
        return indices

    def table(self, width: int) -> Table:
        indices = self.shown(width)
        hidden = [c.header for i, c in enumerate(self.columns) if i not in indices]
        caption = None
        if hidden:
            caption = Text(f"Not shown at {width} columns: {', '.join(hidden)}"
                           + (f" ({self.hint})" if self.hint else "") + ".", style="dim")
        # Names wrap past their `max_width` only when the table would not fit with them whole.
        whole = self._fixed(indices, self.natural) + sum(self.natural[i] for i in indices if self.columns[i].grows)
        widths = self.natural if whole <= width else self.narrow
        room = width - self._fixed(indices, widths)
        wrapped = sum(any(row[i].cell_len > room for i in indices if self.columns[i].grows) for row in self.rows)
        table = Table(title=self.title, caption=caption, caption_justify="left", box=box.SIMPLE_HEAD,
                      show_edge=False, pad_edge=False, show_lines=2 * wrapped > len(self.rows))
        for i in indices:
            column = self.columns[i]
            table.add_column(column.header, justify=column.justify, overflow="fold",
                             width=None if column.grows else widths[i])
        for row in self.rows:
            table.add_row(*(row[i] for i in indices))
        return table

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield self.table(options.max_width)


def whole(value: float | None) -> str:
    return "" if value is None else f"{value:.0f}"


BAND_COLOURS: Final[Mapping[str, str]] = {"red": "red", "yellow": "yellow", "green": "green", "unknown": "dim"}

SCORE_TABLE: Final = (
    Column("Account", max_width=28), Column("Owner", max_width=20, hide=1), Column("Score", justify="right"),
    Column("Band"), Column("Trend"), Column("Churn", justify="right", hide=2),
    Column("Expansion", justify="right", hide=3), Column("Confidence", max_width=24, hide=3),
    Column("Reason", grows=True))


def scores_table(rows: list[dict[str, Any]], title: str = "Account health") -> FittedTable:
    """The latest scores as `healthbeat scores` and the demo show them; at 80 columns (or piped without a
    terminal) the account, score, band, trend and reason, with the reason given the room."""
    def cells(row: Mapping[str, Any]) -> list[Cell]:
        coverage = f" {round(100 * row['coverage'])}%" if row.get("coverage") is not None else ""
        return [row["name"], row["owner"], f"{row['score']:.0f}",
                plain(row["band"], BAND_COLOURS.get(row["band"], "")), row["trend"], whole(row["churn_risk"]),
                whole(row.get("expansion_readiness")), f"{row.get('confidence') or ''}{coverage}", row["reason"]]
    return FittedTable(title, SCORE_TABLE, [cells(row) for row in rows],
                       hint="a wider terminal or --format csv shows them")


# -- what a person types -------------------------------------------------------------------------------------

MAX_REASON: Final = 500
"""A reason (override, silence) fits in the Slack modal's reason box (max_length 500) and, quoted in a nudge, in
one Slack section (3000 characters) with the account, score and band beside it: a sentence or three, which is
what a reader of a score or a silence list takes in."""
MAX_NAME: Final = 200
"""Who set something (`--by`): a person's name, email or handle, well above the longest name Salesforce keeps
for a user (a 40-character first and an 80-character last name); a paragraph here is a mistake."""


class BadInput(HealthbeatError):
    """A value typed on the command line that cannot be right (a typo, text too long or not text): the
    message names the option and what it accepts; exit 2, as for a malformed option."""

    exit_status = 2


def one_of(option: str, value: str, allowed: Iterable[str], what: str, *, listed: int = 12) -> str:
    """`value` when it is one of `allowed`, else `BadInput` naming the allowed values (or, when there are
    many, the close ones): a typo in a filter or a target is refused, not answered with nothing."""
    choices = list(dict.fromkeys(allowed))
    if value in choices:
        return value
    message = f"unknown {option} {value!r}"
    if not choices:
        message += f": there are no {what} yet"
    elif len(choices) <= listed:
        message += f"; the {what} are {', '.join(choices)}"
    else:
        message += f" ({len(choices)} {what} are known)"
    near = difflib.get_close_matches(value, choices, n=3)
    if near:
        message += f"; did you mean {' or '.join(map(repr, near))}?"
    raise BadInput(clean(message))


def free_text(option: str, value: str, limit: int) -> str:
    """Text a person gives (a reason, a name): not blank, no control characters, at most `limit` characters;
    `BadInput` saying which rule it broke."""
    if not value.strip():
        raise BadInput(f"{option} must not be empty")
    if len(value) > limit:
        raise BadInput(f"{option} is {len(value)} characters long; at most {limit} are allowed")
    if clean(value) != value:
        raise BadInput(f"{option} must be one line of text, without control characters")
    return value
