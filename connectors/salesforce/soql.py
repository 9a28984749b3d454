"""A small SOQL evaluator: tokenizer, recursive-descent parser, binder and executor. Pure, no I/O.

It exists so the sandbox answers queries the way Salesforce does, including the ways
Salesforce refuses them; a connector whose query only works against a lenient fake breaks in
production. Supported::

    SELECT f1, f2 | COUNT() FROM Obj [WHERE cond] [ORDER BY f [ASC|DESC] [NULLS FIRST|LAST], ...]
    [LIMIT n] [OFFSET n]

Conditions: ``= != <> < <= > >=``, ``LIKE``, ``[NOT] IN (...)``, ``AND``/``OR`` (never mixed
without parentheses, as in Salesforce), a leading ``NOT``, parentheses. Literals: strings with
backslash escapes, numbers, ``true``/``false``/``null``, datetimes (``Z``, ``+0000`` or
``+00:00``; a zone is required) and dates. As in Salesforce, keywords and field names are
case-insensitive, text comparisons and sorting ignore case, ids compare exactly (a 15-character
literal matches its 18-character id), nulls sort first unless told otherwise.

Errors are :class:`SoqlError` with Salesforce's error code (``MALFORMED_QUERY``,
``INVALID_FIELD``, ``INVALID_TYPE``...) and a message in Salesforce's shape: the query line, a
caret, ``ERROR at Row:r:Column:c`` and the reason. Things this evaluator does not implement
(relationship paths, functions, date literals such as ``TODAY``, GROUP BY) are refused with a
message that says the sandbox does not support them, never silently misread.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, TypeAlias

from connectors.salesforce.ids import to_18
from connectors.salesforce.schema import (
    NUMBER_TYPES,
    FieldSpec,
    Schema,
    SObjectSpec,
    format_datetime,
    parse_date,
    parse_datetime,
)

__all__ = ["BoundQuery", "SoqlError", "compile_query", "parse"]

MAX_OFFSET: Final = 2000


class SoqlError(Exception):
    """A query Salesforce would refuse; ``str()`` is the message Salesforce would send."""

    def __init__(self, error_code: str, detail: str, soql: str, position: int) -> None:
        self.error_code = error_code
        self.detail = detail
        self.row, self.column, line = _locate(soql, position)
        self.message = f"\n{line}\n{' ' * (self.column - 1)}^\nERROR at Row:{self.row}:Column:{self.column}\n{detail}"
        super().__init__(self.message)


def _locate(text: str, position: int) -> tuple[int, int, str]:
    position = max(0, min(position, len(text)))
    row = text.count("\n", 0, position) + 1
    start = text.rfind("\n", 0, position) + 1
    end = text.find("\n", position)
    return row, position - start + 1, text[start : end if end != -1 else len(text)]


# --- tokens --------------------------------------------------------------------------------

TokenKind: TypeAlias = Literal["ident", "string", "number", "datetime", "date", "op", "punct", "eof"]


@dataclass(frozen=True)
class Token:
    kind: TokenKind
    text: str
    value: Any
    pos: int

    def is_word(self, *words: str) -> bool:
        return self.kind == "ident" and self.text.upper() in words


_DATETIME_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2})?")
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}(?![\d])")
_NUMBER_RE = re.compile(r"-?\d+(?:\.\d+)?(?![\w.])")
_IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
_OPERATORS = ("<=", ">=", "!=", "<>", "=", "<", ">")
_ESCAPES: Final[Mapping[str, str]] = {
    "'": "'",
    '"': '"',
    "\\": "\\",
    "n": "\n",
    "t": "\t",
    "r": "\r",
    "b": "\b",
    "f": "\f",
    "%": "\\%",
    "_": "\\_",  # kept escaped: they only mean something to LIKE
}


def tokenize(soql: str) -> list[Token]:
    """Split ``soql`` into tokens, or raise :class:`SoqlError` at the first character that fits none."""
    tokens: list[Token] = []
    pos = 0
    while pos < len(soql):
        char = soql[pos]
        if char.isspace():
            pos += 1
        elif char == "'":
            token = _read_string(soql, pos)
            tokens.append(token)
            pos += len(token.text)
        elif char.isdigit() or (char == "-" and soql[pos + 1 : pos + 2].isdigit()):
            token = _read_number_or_date(soql, pos)
            tokens.append(token)
            pos += len(token.text)
        elif match := _IDENT_RE.match(soql, pos):
            tokens.append(Token("ident", match.group(), match.group(), pos))
            pos = match.end()
        elif char in "(),":
            tokens.append(Token("punct", char, char, pos))
            pos += 1
        elif op := next((o for o in _OPERATORS if soql.startswith(o, pos)), None):
            tokens.append(Token("op", op, "!=" if op == "<>" else op, pos))
            pos += len(op)
        else:
            raise SoqlError("MALFORMED_QUERY", f"unexpected token: '{char}'", soql, pos)
    tokens.append(Token("eof", "<EOF>", None, len(soql)))
    return tokens


def _read_string(soql: str, start: int) -> Token:
    chars: list[str] = []
    pos = start + 1
    while pos < len(soql):
        char = soql[pos]
        if char == "\\":
            escaped = soql[pos + 1 : pos + 2]
            if escaped not in _ESCAPES:
                raise SoqlError("MALFORMED_QUERY", f"Invalid string literal: invalid escape '\\{escaped}'", soql, pos)
            chars.append(_ESCAPES[escaped])
            pos += 2
        elif char == "'":
            return Token("string", soql[start : pos + 1], "".join(chars), start)
        else:
            chars.append(char)
            pos += 1
    raise SoqlError("MALFORMED_QUERY", "unterminated string literal", soql, start)


def _read_number_or_date(soql: str, pos: int) -> Token:
    if match := _DATETIME_RE.match(soql, pos):
        text = match.group()
        if not text.endswith("Z") and not re.search(r"[+-]\d{2}:?\d{2}$", text):
            raise SoqlError("MALFORMED_QUERY", f"datetime literal {text} needs a time zone, e.g. {text}Z", soql, pos)
        try:
            return Token("datetime", text, parse_datetime(text, require_zone=True), pos)
        except ValueError:
            raise SoqlError("MALFORMED_QUERY", f"invalid datetime literal: {text}", soql, pos) from None
    if match := _DATE_RE.match(soql, pos):
        try:
            return Token("date", match.group(), parse_date(match.group()), pos)
        except ValueError:
            raise SoqlError("MALFORMED_QUERY", f"invalid date literal: {match.group()}", soql, pos) from None
    if match := _NUMBER_RE.match(soql, pos):
        text = match.group()
        return Token("number", text, float(text) if "." in text else int(text), pos)
    raise SoqlError("MALFORMED_QUERY", f"unexpected token: '{soql[pos : pos + 12].split()[0]}'", soql, pos)


# --- syntax tree ---------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldRef:
    name: str
    pos: int


@dataclass(frozen=True)
class Value:
    """A literal: ``kind`` is string, number, boolean, null, datetime or date."""

    kind: str
    value: Any
    pos: int


@dataclass(frozen=True)
class Comparison:
    field: FieldRef
    op: str  # = != < <= > >= LIKE IN NOT IN
    values: tuple[Value, ...]
    pos: int


@dataclass(frozen=True)
class Not:
    operand: Condition


@dataclass(frozen=True)
class Junction:
    op: str  # AND | OR
    operands: tuple[Condition, ...]


Condition: TypeAlias = Comparison | Not | Junction


@dataclass(frozen=True)
class OrderItem:
    field: FieldRef
    descending: bool
    nulls_last: bool


@dataclass(frozen=True)
class Query:
    """A parsed (not yet checked against the schema) query."""

    soql: str
    sobject: str
    sobject_pos: int
    fields: tuple[FieldRef, ...]
    is_count: bool
    where: Condition | None
    order_by: tuple[OrderItem, ...]
    limit: int | None
    offset: int | None


_DATE_LITERALS = re.compile(
    r"^(YESTERDAY|TODAY|TOMORROW|(LAST|THIS|NEXT)_(WEEK|MONTH|QUARTER|YEAR|FISCAL_QUARTER|FISCAL_YEAR|90_DAYS)"
    r"|(LAST|NEXT)_N_\w+|N_\w+_AGO)$",
    re.IGNORECASE,
)
_UNSUPPORTED_CLAUSES = ("GROUP", "HAVING", "WITH", "FOR", "USING", "TYPEOF", "UPDATE")


class _Parser:
    def __init__(self, soql: str) -> None:
        self.soql = soql
        self.tokens = tokenize(soql)
        self.index = 0

    # helpers
    @property
    def token(self) -> Token:
        return self.tokens[self.index]

    def advance(self) -> Token:
        token = self.token
        self.index += 1
        return token

    def error(self, detail: str | None = None, token: Token | None = None) -> SoqlError:
        token = token or self.token
        return SoqlError("MALFORMED_QUERY", detail or f"unexpected token: {token.text}", self.soql, token.pos)

    def expect_word(self, word: str) -> Token:
        if not self.token.is_word(word):
            raise self.error()
        return self.advance()

    def expect_punct(self, char: str) -> Token:
        if self.token.kind != "punct" or self.token.text != char:
            raise self.error()
        return self.advance()

    # grammar
    def query(self) -> Query:
        self.expect_word("SELECT")
        fields, is_count = self.select_list()
        self.expect_word("FROM")
        if self.token.kind != "ident" or "." in self.token.text:
            raise self.error()
        sobject = self.advance()
        where = None
        if self.token.is_word("WHERE"):
            self.advance()
            where = self.condition()
        order_by: tuple[OrderItem, ...] = ()
        if self.token.is_word("ORDER"):
            self.advance()
            self.expect_word("BY")
            order_by = self.order_list()
        limit = self.clause_number("LIMIT")
        offset = self.clause_number("OFFSET")
        trailing = self.tokens[self.index]  # re-read: mypy would keep the narrowing from FROM's check
        if trailing.is_word(*_UNSUPPORTED_CLAUSES):
            raise self.error(f"{trailing.text.upper()} clauses are not supported by the Healthbeat sandbox")
        if trailing.kind != "eof":
            raise self.error()
        return Query(self.soql, sobject.text, sobject.pos, fields, is_count, where, order_by, limit, offset)

    def select_list(self) -> tuple[tuple[FieldRef, ...], bool]:
        if self.token.is_word("COUNT") and self.tokens[self.index + 1].text == "(":
            count = self.advance()
            self.expect_punct("(")
            if self.token.text != ")":
                raise self.error(
                    "COUNT(field) aggregates are not supported by the Healthbeat sandbox; use COUNT()", count
                )
            self.expect_punct(")")
            return (), True
        fields = [self.field_ref()]
        while self.token.text == ",":
            self.advance()
            fields.append(self.field_ref())
        return tuple(fields), False

    def field_ref(self) -> FieldRef:
        token = self.token
        if token.kind != "ident" or token.is_word("FROM", "WHERE", "SELECT"):
            raise self.error()
        self.advance()
        if self.token.text == "(":
            raise self.error(f"function {token.text}() is not supported by the Healthbeat sandbox", token)
        if "." in token.text:
            raise self.error(f"relationship path '{token.text}' is not supported by the Healthbeat sandbox", token)
        return FieldRef(token.text, token.pos)

    def order_list(self) -> tuple[OrderItem, ...]:
        items = []
        while True:
            ref = self.field_ref()
            descending = False
            if self.token.is_word("ASC", "DESC"):
                descending = self.advance().text.upper() == "DESC"
            nulls_last = False
            if self.token.is_word("NULLS"):
                self.advance()
                if not self.token.is_word("FIRST", "LAST"):
                    raise self.error()
                nulls_last = self.advance().text.upper() == "LAST"
            items.append(OrderItem(ref, descending, nulls_last))
            if self.token.text != ",":
                return tuple(items)
            self.advance()

    def clause_number(self, word: str) -> int | None:
        if not self.token.is_word(word):
            return None
        self.advance()
        token = self.token
        if token.kind != "number" or not isinstance(token.value, int) or token.value < 0:
            raise self.error()
        self.advance()
        return int(token.value)

    def condition(self) -> Condition:
        operands = [self.negatable_operand()]
        connective: str | None = None
        while self.token.is_word("AND", "OR"):
            word = self.token.text.upper()
            if connective not in (None, word):
                raise self.error()  # Salesforce: AND and OR need parentheses when mixed
            connective = word
            self.advance()
            if self.token.is_word("NOT"):
                raise self.error()  # Salesforce: NOT only opens a condition
            operands.append(self.operand())
        return operands[0] if connective is None else Junction(connective, tuple(operands))

    def negatable_operand(self) -> Condition:
        if self.token.is_word("NOT"):
            self.advance()
            return Not(self.operand())
        return self.operand()

    def operand(self) -> Condition:
        if self.token.text == "(" and self.token.kind == "punct":
            self.advance()
            inner = self.condition()
            self.expect_punct(")")
            return inner
        return self.comparison()

    def comparison(self) -> Comparison:
        ref = self.field_ref()
        token = self.token
        if token.kind == "op":
            self.advance()
            return Comparison(ref, str(token.value), (self.value(),), token.pos)
        if token.is_word("LIKE"):
            self.advance()
            return Comparison(ref, "LIKE", (self.value(),), token.pos)
        if token.is_word("IN") or (token.is_word("NOT") and self.tokens[self.index + 1].is_word("IN")):
            op = "NOT IN" if token.is_word("NOT") else "IN"
            self.index += 2 if op == "NOT IN" else 1
            self.expect_punct("(")
            if self.token.is_word("SELECT"):
                raise self.error("semi-join sub-selects are not supported by the Healthbeat sandbox")
            values = [self.value()]
            while self.token.text == ",":
                self.advance()
                values.append(self.value())
            self.expect_punct(")")
            return Comparison(ref, op, tuple(values), token.pos)
        if token.is_word("INCLUDES", "EXCLUDES"):
            raise self.error(f"{token.text.upper()} is not supported by the Healthbeat sandbox")
        raise self.error()

    def value(self) -> Value:
        token = self.advance()
        if token.kind in ("string", "number", "datetime", "date"):
            return Value(token.kind, token.value, token.pos)
        if token.is_word("TRUE", "FALSE"):
            return Value("boolean", token.text.upper() == "TRUE", token.pos)
        if token.is_word("NULL"):
            return Value("null", None, token.pos)
        if token.kind == "ident" and _DATE_LITERALS.match(token.text.split(":")[0]):
            raise self.error(
                f"date literal {token.text} is not supported by the Healthbeat sandbox; "
                "use an explicit datetime such as 2024-01-01T00:00:00Z",
                token,
            )
        raise self.error(token=token)


def parse(soql: str) -> Query:
    """Parse ``soql`` into a :class:`Query`, or raise :class:`SoqlError` (``MALFORMED_QUERY``)."""
    return _Parser(soql).query()


# --- binding against the schema ------------------------------------------------------------

Row: TypeAlias = Mapping[str, Any]
Predicate: TypeAlias = Callable[[Row], bool]

_TYPE_NAMES: Final[Mapping[str, str]] = {
    "datetime": "dateTime",
    "date": "date",
    "double": "double",
    "currency": "currency",
    "int": "int",
    "boolean": "boolean",
    "id": "id",
    "reference": "id",
}
_LIKE_TYPES: Final = frozenset({"string", "textarea", "picklist", "email", "url"})
_STORED_IN_ORDER: Final = frozenset({"datetime", "date"})
_FROM_BELOW: Final = frozenset({">", ">=", "="})
_FROM_ABOVE: Final = frozenset({"<", "<=", "="})


@dataclass(frozen=True)
class BoundQuery:
    """A query checked against the schema, ready to run over an object's records."""

    sobject: SObjectSpec
    fields: tuple[FieldSpec, ...]
    is_count: bool
    predicate: Predicate | None
    order_by: tuple[tuple[FieldSpec, bool, bool], ...]
    limit: int | None
    offset: int
    lower_bounds: Mapping[str, Any]
    """Per field, a value every row the WHERE clause accepts holds at least (in the comparable form of
    :func:`_key_function`, never null): a store whose records are sorted by that field may read only the
    records from there on, as Salesforce answers from an index. Fields the WHERE does not bound are absent."""
    upper_bounds: Mapping[str, Any]
    """Per field, a value every row the WHERE clause accepts holds at most (the same form): with
    :attr:`lower_bounds`, a range of the sorted store, so a query for one window of time reads that window
    alone. Fields the WHERE does not bound from above are absent."""

    @property
    def order_is_total(self) -> bool:
        """Whether ORDER BY alone fixes the row order (it includes the unique Id), so no input order shows."""
        return any(spec.type == "id" for spec, _, _ in self.order_by)

    def run(self, records: Iterable[Row]) -> list[dict[str, Any]]:
        """Filter, sort, page and project ``records``; for ``COUNT()`` the rows are empty dicts."""
        rows = [r for r in records if self.predicate is None or self.predicate(r)]
        for spec, descending, nulls_last in reversed(self.order_by):
            rows = _sorted(rows, spec, descending=descending, nulls_last=nulls_last)
        end = None if self.limit is None else self.offset + self.limit
        rows = rows[self.offset : end]
        return [{f.name: row.get(f.name) for f in self.fields} for row in rows]


def compile_query(soql: str, schema: Schema) -> BoundQuery:
    """Parse ``soql`` and check it against ``schema``; raise :class:`SoqlError` as Salesforce would."""
    query = parse(soql)
    sobject = schema.sobject(query.sobject)
    if sobject is None:
        raise SoqlError(
            "INVALID_TYPE",
            f"sObject type '{query.sobject}' is not supported. If you are attempting to use a custom object, "
            "be sure to append the '__c' after the entity name. Please reference your WSDL or the describe "
            "call for the appropriate names.",
            soql,
            query.sobject_pos,
        )
    binder = _Binder(query, sobject)
    fields = tuple(binder.field(ref) for ref in query.fields)
    seen: set[str] = set()
    for ref, spec in zip(query.fields, fields, strict=True):
        if spec.name in seen:
            raise SoqlError("MALFORMED_QUERY", f"duplicate field selected: {spec.name}", soql, ref.pos)
        seen.add(spec.name)
    order = tuple((binder.sortable(item.field), item.descending, item.nulls_last) for item in query.order_by)
    if query.offset is not None and query.offset > MAX_OFFSET:
        raise SoqlError("NUMBER_OUTSIDE_VALID_RANGE", f"Maximum SOQL offset allowed is {MAX_OFFSET}", soql, len(soql))
    predicate = binder.condition(query.where) if query.where is not None else None
    lower = binder.bounds(query.where, _FROM_BELOW, max) if query.where is not None else {}
    upper = binder.bounds(query.where, _FROM_ABOVE, min) if query.where is not None else {}
    return BoundQuery(sobject, fields, query.is_count, predicate, order, query.limit, query.offset or 0, lower, upper)


class _Binder:
    def __init__(self, query: Query, sobject: SObjectSpec) -> None:
        self.query = query
        self.sobject = sobject

    def invalid(self, detail: str, pos: int, code: str = "INVALID_FIELD") -> SoqlError:
        return SoqlError(code, detail, self.query.soql, pos)

    def field(self, ref: FieldRef) -> FieldSpec:
        spec = self.sobject.field(ref.name)
        if spec is None:
            raise self.invalid(
                f"No such column '{ref.name}' on entity '{self.sobject.name}'. If you are attempting to use "
                "a custom field, be sure to append the '__c' after the custom field name. Please reference "
                "your WSDL or the describe call for the appropriate names.",
                ref.pos,
            )
        return spec

    def sortable(self, ref: FieldRef) -> FieldSpec:
        spec = self.field(ref)
        if spec.type == "textarea" and spec.length > 255:
            raise self.invalid(f"field '{spec.name}' can not be sorted in a query call", ref.pos)
        return spec

    def condition(self, node: Condition) -> Predicate:
        if isinstance(node, Junction):
            parts = [self.condition(operand) for operand in node.operands]
            if node.op == "AND":
                return lambda row: all(part(row) for part in parts)
            return lambda row: any(part(row) for part in parts)
        if isinstance(node, Not):
            inner = self.condition(node.operand)
            return lambda row: not inner(row)
        return self.comparison(node)

    def bounds(self, node: Condition, operators: frozenset[str], tighter: Callable[[Any, Any], Any]
               ) -> dict[str, Any]:
        """The value of each field a row must hold at least (or at most) to match ``node``, from comparisons
        with ``operators``; see :attr:`BoundQuery.lower_bounds` and :attr:`BoundQuery.upper_bounds`.

        Only for fields whose stored values compare as they sort (datetimes and dates: strings in one
        form), so a sorted store and the predicate agree on "at least". An AND takes the ``tighter`` bound
        any operand gives, an OR the looser, for fields every branch bounds; NOT bounds nothing. A strict
        comparison bounds like a loose one: the range may hold a row too many, which the predicate drops.
        """
        if isinstance(node, Comparison):
            spec = self.field(node.field)
            if node.op not in operators or spec.type not in _STORED_IN_ORDER:
                return {}
            key = self.literal_key(spec, node.values[0], node.op)
            return {} if key is None else {spec.name: key}
        if isinstance(node, Not):
            return {}
        parts = [self.bounds(operand, operators, tighter) for operand in node.operands]
        if node.op == "AND":
            tightest: dict[str, Any] = {}
            for part in parts:
                for name, key in part.items():
                    tightest[name] = tighter(tightest.get(name, key), key)
            return tightest
        looser = min if tighter is max else max
        shared = set(parts[0]).intersection(*parts[1:])
        return {name: looser(part[name] for part in parts) for name in shared}

    def comparison(self, node: Comparison) -> Predicate:
        spec = self.field(node.field)
        if spec.type == "textarea" and spec.length > 255:
            raise self.invalid(f"field '{spec.name}' can not be filtered in a query call", node.field.pos)
        if node.op == "LIKE":
            return self.like(spec, node)
        keys = [self.literal_key(spec, value, node.op) for value in node.values]
        name = spec.name
        key_of = _key_function(spec)
        if node.op in ("IN", "NOT IN"):
            wanted = set(keys)
            if node.op == "IN":
                return lambda row: key_of(row.get(name)) in wanted
            return lambda row: key_of(row.get(name)) not in wanted
        target = keys[0]
        if node.op == "=":
            return lambda row: key_of(row.get(name)) == target
        if node.op == "!=":
            return lambda row: key_of(row.get(name)) != target
        if spec.type == "boolean":
            raise self.invalid("invalid operator on boolean field", node.pos)
        if target is None:
            raise self.invalid(
                f"null can only be compared with = or != (field '{spec.name}')", node.pos, "MALFORMED_QUERY"
            )
        compare = _ORDERING[node.op]
        return lambda row: (key := key_of(row.get(name))) is not None and compare(key, target)

    def like(self, spec: FieldSpec, node: Comparison) -> Predicate:
        value = node.values[0]
        if spec.type not in _LIKE_TYPES:
            raise self.invalid(f"invalid operator on {_TYPE_NAMES.get(spec.type, spec.type)} field", node.pos)
        if value.kind != "string":
            raise self.invalid(
                f"value of filter criterion for field '{spec.name}' must be of type string and should be "
                "enclosed in quotes",
                value.pos,
            )
        pattern = _like_regex(str(value.value))
        name = spec.name
        return lambda row: isinstance(v := row.get(name), str) and pattern.fullmatch(v) is not None

    def literal_key(self, spec: FieldSpec, value: Value, op: str) -> Any:
        """The literal in the same comparable form as :func:`_key_function` gives stored values."""
        if value.kind == "null":
            return None
        kind = spec.type
        expected = _TYPE_NAMES.get(kind, "string")
        quoted = expected in ("string", "id")
        if kind == "datetime" and value.kind == "datetime":
            return format_datetime(value.value)
        if kind == "date" and value.kind == "date":
            return value.value.isoformat()
        if kind in NUMBER_TYPES and value.kind == "number":
            return float(value.value)
        if kind == "boolean" and value.kind == "boolean":
            return value.value
        if kind in ("id", "reference") and value.kind == "string":
            text = _unescape_like(str(value.value))
            try:
                return to_18(text)
            except ValueError:
                raise self.invalid(f"invalid ID field: {text}", value.pos, "INVALID_QUERY_FILTER_OPERATOR") from None
        if expected == "string" and value.kind == "string":
            return _unescape_like(str(value.value)).casefold()
        raise self.invalid(
            f"value of filter criterion for field '{spec.name}' must be of type {expected} and should "
            f"{'' if quoted else 'not '}be enclosed in quotes",
            value.pos,
        )


def _key_function(spec: FieldSpec) -> Callable[[Any], Any]:
    """How stored values of ``spec`` compare: text ignoring case, numbers as floats, the rest as stored.

    Stored datetimes are all ``...+0000`` UTC with milliseconds, so their strings sort in time order.
    """
    if spec.type in ("id", "reference", "datetime", "date", "boolean"):
        return lambda v: v
    if spec.type in NUMBER_TYPES:
        return lambda v: None if v is None else float(v)
    return lambda v: v.casefold() if isinstance(v, str) else v


_ORDERING: Final[Mapping[str, Callable[[Any, Any], bool]]] = {
    "<": lambda a, b: bool(a < b),
    "<=": lambda a, b: bool(a <= b),
    ">": lambda a, b: bool(a > b),
    ">=": lambda a, b: bool(a >= b),
}


def _sorted(rows: Sequence[Row], spec: FieldSpec, *, descending: bool, nulls_last: bool) -> list[Row]:
    """A stable sort by one field with nulls placed as asked (Salesforce's default: first)."""
    key_of = _key_function(spec)
    present = [r for r in rows if r.get(spec.name) is not None]
    nulls = [r for r in rows if r.get(spec.name) is None]
    present.sort(key=lambda r: key_of(r.get(spec.name)), reverse=descending)
    return present + nulls if nulls_last else nulls + present


def _like_regex(pattern: str) -> re.Pattern[str]:
    parts: list[str] = []
    index = 0
    while index < len(pattern):
        if pattern.startswith(("\\%", "\\_"), index):
            parts.append(re.escape(pattern[index + 1]))
            index += 2
            continue
        char = pattern[index]
        parts.append(".*" if char == "%" else "." if char == "_" else re.escape(char))
        index += 1
    return re.compile("".join(parts), re.IGNORECASE | re.DOTALL)


def _unescape_like(text: str) -> str:
    return text.replace("\\%", "%").replace("\\_", "_")
