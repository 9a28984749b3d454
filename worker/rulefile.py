"""Reading an ops-edited YAML file into a pydantic model, with every error named by file, line and field.

Ops edit `rules/*.yaml` by hand; a message like "groups.engagement.measures.meetings.weight: Input should be
a valid number" is only half the help. Pydantic reports the path of a bad field; the YAML node tree knows
the line of every path; this module joins the two so each problem reads `scorecard.yaml:14: groups...`.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from worker.errors import HealthbeatError

Model = TypeVar("Model", bound=BaseModel)


@dataclass(frozen=True)
class Problem:
    file: str
    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


class RuleFileError(HealthbeatError):
    """A rule file could not be used; `problems` lists every one found, not just the first."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


MAX_BYTES = 1 << 20
"""The largest rule file read (the shipped ones are under 10 KiB): parsing pure-Python YAML takes about a second
a mebibyte, and the worker reads the files every cycle."""
MAX_DEPTH = 50
"""The deepest nesting of lists and mappings a rule file may have (the shipped ones stay under 10). PyYAML and the
code that walks the data recurse once a level or more, so a deeper file would end in a RecursionError."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """A key given twice is almost always a mistake that silently drops the first value; nesting deeper than
    `MAX_DEPTH` is refused while composing, before anything recurses that far."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                event: yaml.Event = self.peek_event()  # type: ignore[no-untyped-call]  # untyped in the stubs
                mark = event.start_mark if isinstance(event.start_mark, yaml.error.Mark) else None
                raise yaml.composer.ComposerError(None, None, f"nested more than {MAX_DEPTH} levels deep", mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        """PyYAML's constructors raise plain Python errors for a value that matches a type's pattern but is not
        one (`2026-02-30`, an explicit `!!timestamp soon`): make them YAML errors at the value's line."""
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, TypeError, AttributeError, LookupError, OverflowError) as exc:
            kind = str(node.tag).rpartition(":")[2]
            what = f"{str(node.value)[:60]!r} is not a valid {kind}" if isinstance(node, yaml.ScalarNode) \
                else f"not a valid {kind}"
            why = f" ({exc})" if type(exc) is ValueError else ""
            raise yaml.constructor.ConstructorError(None, None, what + why, node.start_mark) from None


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: dict[Any, yaml.Node] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            hash(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None, None, "a key must be a plain value, not a list or a mapping", key_node.start_mark) from None
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first on line {seen[key].start_mark.line + 1})",
                key_node.start_mark)
        seen[key] = key_node
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


@dataclass(frozen=True)
class LoadedFile:
    path: Path
    data: Any
    root: yaml.Node | None
    digest: str

    def line_of(self, loc: Sequence[int | str]) -> int | None:
        """The line (1-based) of the deepest key or item on `loc` that the file has, for error messages."""
        node = self.root
        line = node.start_mark.line + 1 if node is not None else None
        for part in loc:
            if isinstance(node, yaml.MappingNode):
                pair = next(((k, v) for k, v in node.value if getattr(k, "value", None) == str(part)), None)
                if pair is None:
                    return line
                line, node = pair[0].start_mark.line + 1, pair[1]
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
                node = node.value[part]
                line = node.start_mark.line + 1
            else:
                return line
        return line


def read_rule_bytes(path: Path) -> bytes:
    """The bytes of a rule file, or a `RuleFileError` saying why they cannot be had: missing, not a regular file
    (a directory; a FIFO, which would block the worker for good), unreadable, or larger than `MAX_BYTES`."""

    def problem(message: str) -> RuleFileError:
        return RuleFileError([Problem(str(path), None, "", message)])

    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise problem(f"cannot read: {exc.strerror}") from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise problem("cannot read: it is a directory, not a file")
        if not stat.S_ISREG(mode):
            raise problem("cannot read: it is not a regular file")
        with os.fdopen(os.dup(fd), "rb") as file:  # its own descriptor: `finally` closes this one
            data = file.read(MAX_BYTES + 1)
    except OSError as exc:
        raise problem(f"cannot read: {exc.strerror}") from None
    finally:
        os.close(fd)
    if len(data) > MAX_BYTES:
        raise problem(f"too large: a rule file may hold at most {MAX_BYTES // 1024} KiB")
    return data


def read_yaml(path: Path) -> LoadedFile:
    """Read and parse one rule file; anything wrong with it (unreadable, not UTF-8, not YAML, too deep) is a
    `RuleFileError` with the file and, where there is one, the line: never another exception."""
    data = read_rule_bytes(path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        column = exc.start - data.rfind(b"\n", 0, exc.start)
        raise RuleFileError([Problem(str(path), data.count(b"\n", 0, exc.start) + 1, "",
                                     f"not UTF-8: byte 0x{data[exc.start]:02X} at byte {column} of the line (save "
                                     f"the file as UTF-8)")]) from None
    loader = None
    try:
        loader = _UniqueKeyLoader(text)
        root = loader.get_single_node()
        content = loader.construct_document(root) if root is not None else None
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow (NUL, most control characters)
        code = exc.character if isinstance(exc.character, int) else ord(exc.character)
        raise RuleFileError([Problem(str(path), text.count("\n", 0, exc.position) + 1, "",
                                     f"not valid YAML: the character U+{code:04X} is not allowed in a YAML "
                                     f"file")]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise RuleFileError([Problem(str(path), line, "", f"not valid YAML: {problem}")]) from None
    except RecursionError:  # a last guard: `MAX_DEPTH` keeps every recursion of PyYAML short
        raise RuleFileError([Problem(str(path), None, "", f"not valid YAML: nested more than {MAX_DEPTH} "
                                                          f"levels deep")]) from None
    finally:
        if loader is not None:
            loader.dispose()
    return LoadedFile(path, content, root, hashlib.sha256(data).hexdigest()[:16])


def validate(loaded: LoadedFile, model: type[Model]) -> Model:
    """Validate against the model; on failure list every problem with its line and dotted field."""
    if not isinstance(loaded.data, dict):
        raise RuleFileError([Problem(str(loaded.path), 1, "", "expected a mapping at the top of the file")])
    try:
        return model.model_validate(loaded.data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            loc = [p for p in error["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
            field = ".".join(str(p) for p in loc)
            message = error["msg"].removeprefix("Value error, ")
            if error["type"] == "extra_forbidden":
                message = "unknown key (misspelt? see the documented keys)"
            problems.append(Problem(str(loaded.path), loaded.line_of(loc), field, message))
        raise RuleFileError(problems) from None


def raise_problems(loaded: LoadedFile, problems: Sequence[tuple[Sequence[int | str], str]]) -> None:
    """Turn checks that run after validation (each with its place in the file) into one error."""
    if problems:
        raise RuleFileError([Problem(str(loaded.path), loaded.line_of(loc), ".".join(str(p) for p in loc), message)
                             for loc, message in problems])
