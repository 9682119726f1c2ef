"""Reading YAML while remembering where every key came from.

PyYAML's composer keeps a mark (line, column) on every node; plain
``yaml.safe_load`` throws them away.  We build the Python data ourselves
from the node tree so that each key path maps to its line, and so that a
key written twice in one mapping is an error instead of a silent override.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

KeyPath = tuple[str | int, ...]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a file, located as precisely as we can."""

    file: str
    line: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


@dataclass
class Located:
    """Plain data (dicts, lists, scalars) plus the line of every key path."""

    data: Any
    lines: dict[KeyPath, int] = field(default_factory=dict)

    def line_of(self, path: KeyPath) -> int | None:
        """The line of `path`, or of its nearest ancestor that has one."""
        for end in range(len(path), -1, -1):
            line = self.lines.get(path[:end])
            if line is not None:
                return line
        return None


def format_path(path: KeyPath) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            name = part if part.isprintable() else repr(part)  # a key "a\nb": still one line
            out += f".{name}" if out else name
    return out


class YamlSyntaxError(Exception):
    def __init__(self, line: int | None, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


Duplicate = tuple[KeyPath, int, str]

# A topology is a few levels deep; deeper is a mistake (or an alias inside
# its own anchor, which would never end), refused before Python's stack is.
MAX_DEPTH = 64

# Without aliases a document holds fewer values than characters; aliases
# can multiply them ("billion laughs": ten levels of ten aliases each make
# ten billion values from 300 bytes).  Past this many per character of text
# (plus some slack), the reading stops with a located error.
MAX_VALUES_PER_CHARACTER = 1

# libyaml's parser where it is built in: the same nodes and marks, 10x faster
# (a national fleet's topology is 47,000 lines).
_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def parse_yaml(text: str) -> tuple[Located, list[Duplicate]]:
    """Parse `text`; return the located data and any duplicate-key findings.

    Raises YamlSyntaxError (with a 1-based line) when the text is not YAML.
    """
    try:
        loader = _Loader(text)
    except UnicodeEncodeError as exc:  # libyaml's reader takes UTF-8: a lone surrogate
        raise _bad_character(text, exc.object[exc.start]) from None
    try:
        node = loader.get_single_node()
        located = Located(data=None, lines={(): 1})
        duplicates: list[Duplicate] = []
        if node is not None:
            budget = MAX_VALUES_PER_CHARACTER * len(text) + 1000
            located.data = _build(loader, node, (), located.lines, duplicates, budget)
        return located, duplicates
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        reason = exc.problem or exc.context or "invalid YAML"
        raise YamlSyntaxError(line, f"YAML syntax error: {reason}") from None
    except yaml.reader.ReaderError as exc:  # its str() is two lines, about "<unicode string>"
        char = exc.character if isinstance(exc.character, str) else chr(exc.character)
        raise _bad_character(text, char) from None
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(None, f"YAML error: {exc}") from None
    finally:
        loader.dispose()


def _bad_character(text: str, char: str) -> YamlSyntaxError:
    """A character YAML does not allow (a control character, a lone
    surrogate), on the line of its first occurrence: the reader stops there."""
    at = text.find(char)
    line = text.count("\n", 0, at) + 1 if at >= 0 else None
    return YamlSyntaxError(line, f"YAML syntax error: character {ord(char):#06x} is not allowed")


def _build(
    loader: yaml.SafeLoader,
    node: yaml.Node,
    path: KeyPath,
    lines: dict[KeyPath, int],
    duplicates: list[Duplicate],
    budget: int,
) -> Any:
    if len(path) > MAX_DEPTH:
        raise _located(node, f"nested more than {MAX_DEPTH} levels deep (an alias inside itself?)")
    if len(lines) > budget:  # every key and item built is in `lines`
        raise _located(node, f"aliases expand to more than {budget} values (a billion laughs?)")
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)  # resolves "<<" merge keys like safe_load does
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise _located(key_node, "expected a key (a name), got a list or mapping")
            key = _scalar(loader, key_node)
            if not isinstance(key, str | int | float | bool) or key is None:
                key = str(key)
            child = (*path, key if isinstance(key, str | int) else str(key))
            if key in out:
                first = lines.get(child)
                message = f"duplicate key {key!r} (first written on line {first})"
                duplicates.append((child, key_node.start_mark.line + 1, message))
                continue
            lines[child] = key_node.start_mark.line + 1
            out[key] = _build(loader, value_node, child, lines, duplicates, budget)
        return out
    if isinstance(node, yaml.SequenceNode):
        items = []
        for index, item in enumerate(node.value):
            child = (*path, index)
            lines[child] = item.start_mark.line + 1
            items.append(_build(loader, item, child, lines, duplicates, budget))
        return items
    return _scalar(loader, node)


def _scalar(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    """A scalar's value.  PyYAML's constructors raise plain Python errors for
    some values it resolved or was told the type of (``2001-13-45``,
    ``!!int abc``, an int of 5,000 digits): those become located errors."""
    try:
        return loader.construct_object(node, deep=True)
    except (ArithmeticError, AttributeError, LookupError, TypeError, ValueError) as exc:
        shown = repr(node.value) if len(str(node.value)) <= 40 else f"{str(node.value)[:40]!r}..."
        tag = node.tag.removeprefix("tag:yaml.org,2002:")
        raise _located(node, f"cannot read {shown} as {tag} ({exc})") from None


def _located(node: yaml.Node, problem: str) -> yaml.MarkedYAMLError:
    return yaml.constructor.ConstructorError(None, None, problem, node.start_mark)


def read_source(path: str | Path, error: Callable[[list[Problem]], Exception]) -> str:
    """A YAML file's text for a loader; `error([problem])` is raised, naming
    the file, when it cannot be read (the web configuration file's loader
    reads its file the same way)."""
    name = str(path)
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error([Problem(name, None, "", "no such file")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise error([Problem(name, None, "", f"cannot read: {reason}")]) from None
