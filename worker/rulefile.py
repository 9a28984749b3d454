"""Reading an ops-edited YAML file into a pydantic model, with every error named by file, line and field.

Ops edit `rules/*.yaml` by hand; a message like "groups.engagement.measures.meetings.weight: Input should be
a valid number" is only half the help. Pydantic reports the path of a bad field; the YAML node tree knows
the line of every path; this module joins the two so each problem reads `scorecard.yaml:14: groups...`.
"""

from __future__ import annotations

import hashlib
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


class _UniqueKeyLoader(yaml.SafeLoader):
    """A key given twice is almost always a mistake that silently drops the first value."""


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


def read_yaml(path: Path) -> LoadedFile:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RuleFileError([Problem(str(path), None, "", f"cannot read: {exc.strerror}")]) from None
    try:
        root = yaml.compose(text, Loader=_UniqueKeyLoader)
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise RuleFileError([Problem(str(path), line, "", f"not valid YAML: {problem}")]) from None
    return LoadedFile(path, data, root, hashlib.sha256(text.encode()).hexdigest()[:16])


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
