"""Load topology.yaml into the typed model, or explain every problem.

    load(path) -> Topology           raises TopologyError
    TopologyError.problems           every Problem found, in file order

Problems come from three passes, each naming file, line and key path:
YAML syntax (the file stops there), shape and units (pydantic: every
such problem at once), and the cross-key rules of `rules.py`, which need
a well-shaped model and so run once the shapes are sound.
"""

from __future__ import annotations

import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from netwatch.errors import UserError
from netwatch.topology import rules
from netwatch.topology.model import Topology
from netwatch.topology.source import (
    KeyPath,
    Located,
    Problem,
    YamlSyntaxError,
    format_path,
    parse_yaml,
    read_source,
)

DEFAULT_PATH = "topology.yaml"


class TopologyError(UserError):
    """The file could not be read or is not a valid topology."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(map(str, problems)))
        self.problems = problems

    def one_line(self) -> str:
        """The first problem, and how many more: for a command's error line."""
        more = len(self.problems) - 1
        return f"{self.problems[0]}" + (f" (and {more} more; run `netwatch check`)" if more else "")


def load_for_command(path: str | Path = DEFAULT_PATH) -> Topology:
    """`load`, with the error a command prints: one line (`UserError`)."""
    try:
        return load(path)
    except TopologyError as exc:
        raise UserError(exc.one_line()) from None


def load(path: str | Path = DEFAULT_PATH) -> Topology:
    return loads(read_source(path, TopologyError), str(path))


def loads(text: str, name: str = "<text>") -> Topology:
    try:
        located, duplicates = parse_yaml(text)
    except YamlSyntaxError as exc:
        raise TopologyError([Problem(name, exc.line, "", exc.message)]) from None
    problems = [Problem(name, line, format_path(p), msg) for p, line, msg in duplicates]
    if not isinstance(located.data, dict):
        problems.append(Problem(name, 1, "", "expected a mapping of top-level keys"))
        raise TopologyError(problems)
    try:
        topo = Topology.model_validate(located.data)
    except ValidationError as exc:
        problems.extend(_translate(name, located, err) for err in exc.errors())
        raise TopologyError(_in_file_order(problems)) from None
    problems.extend(
        Problem(name, located.line_of(p), format_path(p), msg) for p, msg in rules.check(topo)
    )
    if problems:
        raise TopologyError(_in_file_order(problems))
    return topo


def _in_file_order(problems: list[Problem]) -> list[Problem]:
    return sorted(problems, key=lambda p: (p.line or 0, p.path))


def _translate(name: str, located: Located, err: ErrorDetails) -> Problem:
    # pydantic appends a tag for tagged/union members and function validators;
    # only keys the user wrote are kept.
    path: KeyPath = tuple(
        p
        for p in err["loc"]
        if isinstance(p, int) or not (str(p).startswith("function-") or p == "[key]")
    )
    kind = err["type"]
    given = err.get("input")
    if kind == "extra_forbidden":
        allowed = _allowed_keys(path[:-1])
        hint = f" (expected one of: {', '.join(allowed)})" if allowed else ""
        message = f"unknown key {path[-1]!r}{hint}"
    elif kind == "missing":
        message = "missing required key"
    elif kind in ("model_type", "dict_type", "model_attributes_type"):
        message = f"expected a mapping, got {_show(given)}"
    elif kind in ("tuple_type", "list_type"):
        message = f"expected a list, got {_show(given)}"
    elif kind == "value_error":
        message = str(err["msg"]).removeprefix("Value error, ")
    elif kind.startswith("ip_v4"):
        what = kind.removeprefix("ip_v4_")
        message = (
            f"expected an IPv4 {what} (like '10.10.1.2/30' for an interface), got {_show(given)}"
        )
    else:
        message = f"{err['msg']}, got {_show(given)}"
    return Problem(name, located.line_of(path), format_path(path), message)


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def _allowed_keys(path: KeyPath) -> list[str]:
    """The keys the model accepts at `path`, found by walking the annotations."""
    annotation: Any = Topology
    for part in path:
        annotation = _unwrap(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            field = next(
                (f for n, f in annotation.model_fields.items() if (f.alias or n) == part), None
            )
            if field is None:
                return []
            annotation = field.annotation
        else:
            args = typing.get_args(annotation)
            if not args:
                return []
            annotation = args[-1] if typing.get_origin(annotation) is dict else args[0]
    annotation = _unwrap(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [f.alias or n for n, f in annotation.model_fields.items()]
    return []


def _unwrap(annotation: Any) -> Any:
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            members = [a for a in typing.get_args(annotation) if a is not type(None)]
            annotation = members[0]
        else:
            return annotation
