"""Fuzzing the topology loader: whatever the file holds, `load`/`loads` give a
model or a `TopologyError` whose every problem names the file (and a line
inside it), never another exception.

Inputs: arbitrary YAML documents (nested data dumped by PyYAML, and the real
file's top-level keys over random values), arbitrary text and bytes, YAML
snippets aimed at PyYAML's constructors (tags, timestamps, huge numbers,
recursive aliases, deep nesting), and mutations of the real topology.yaml,
on its data (delete a key, replace a value, add an unknown key, duplicate a
list item) and on its lines (delete, duplicate, change a value, re-indent).

Deterministic: derandomized, no example database.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from netwatch.errors import UserError
from netwatch.topology import Topology, TopologyError, load, load_for_command, loads

ROOT = Path(__file__).resolve().parent.parent
GOOD_TEXT = (ROOT / "topology.yaml").read_text(encoding="utf-8")
_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_Dumper: type[yaml.SafeDumper] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
GOOD_DATA: dict[str, Any] = yaml.load(GOOD_TEXT, Loader=_Loader)
GOOD_LINES = GOOD_TEXT.splitlines(keepends=True)
NAME = "fuzz-topology.yaml"

FUZZ = settings(max_examples=60, deadline=None, derandomize=True, database=None)

KeyPath = tuple[str | int, ...]


def _paths(data: Any, prefix: KeyPath = ()) -> list[KeyPath]:
    """Every key path of `data` (to a mapping's value or a list's item)."""
    out: list[KeyPath] = []
    items: list[tuple[str | int, Any]] = []
    if isinstance(data, dict):
        items = list(data.items())
    elif isinstance(data, list):
        items = list(enumerate(data))
    for key, value in items:
        out.append((*prefix, key))
        out.extend(_paths(value, (*prefix, key)))
    return out


def _scalars(data: Any) -> set[Any]:
    if isinstance(data, dict):
        return {s for v in data.values() for s in _scalars(v)}
    if isinstance(data, list):
        return {s for v in data for s in _scalars(v)}
    return {data}


GOOD_PATHS = _paths(GOOD_DATA)
# The real file's own values, to put where another belongs: right types,
# wrong places (a duration for a rate, an address for an id), which is what
# gets past the shape checks to the cross-key rules.
GOOD_SCALARS = sorted(_scalars(GOOD_DATA), key=repr)


def outcome(text: str) -> Topology | TopologyError:
    """`loads`, with the property checked: a model, or a located error."""
    try:
        return loads(text, NAME)
    except TopologyError as exc:
        _check_located(exc, text)
        return exc


def _check_located(exc: TopologyError, text: str) -> None:
    assert exc.problems, "a TopologyError names at least one problem"
    # YAML's line breaks; the end of the file may be the line after the last.
    lines = len(re.findall(r"\r\n|[\n\r\x85\u2028\u2029]", text)) + 2
    for problem in exc.problems:
        assert problem.file == NAME
        assert str(problem).startswith(NAME)
        assert problem.message
        assert problem.line is None or 1 <= problem.line <= lines, problem
    assert str(exc).startswith(NAME)
    assert exc.one_line().startswith(NAME)
    assert len(exc.one_line().splitlines()) == 1  # what a command prints: one line


# --- strategies ----------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from(GOOD_SCALARS)
)
ODD_KEYS = ["a\nb", "\t", "", " ", "a.b", "[0]", "\x85", "\u2028", "x\r"]
keys = (
    st.text(max_size=12)
    | st.integers(-5, 5)
    | st.sampled_from(sorted(GOOD_DATA))
    | st.sampled_from(ODD_KEYS)
)
documents = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=20,
)
top_level = st.dictionaries(st.sampled_from(sorted(GOOD_DATA)) | st.text(max_size=8), documents)

YAML_CHARS = " \n\t-:?[]{},&*!|>'\"%@`#.0123456789abcxyz<=~\ufeff\x00\x85\u2028錦"
yaml_like_text = st.text(alphabet=YAML_CHARS, max_size=80)
# Characters YAML refuses: control characters, lone surrogates (only a
# caller of `loads` can pass those; a file is read as UTF-8).
odd_text = st.text(
    alphabet=st.sampled_from(YAML_CHARS) | st.characters(categories=["Cc", "Cs"]), max_size=20
)

TAGS = ["!!int", "!!float", "!!bool", "!!timestamp", "!!binary", "!!null", "!!str", "!!merge"]
TAGS += ["!!set", "!!omap", "!!pairs", "!!map", "!!seq", "!python/object:os.system", "!local"]
NASTY_SCALARS = [
    "",
    "abc",
    "0x",
    "0o9",
    "0b2",
    "1:60",
    "1:x",
    "0000-01-01",
    "2001-13-45",
    "2001-02-30",
    "2001-01-01 25:61:61",
    "2001-01-01T00:00:00+99:99",
    "1" * 5000,
    "-" + "9" * 4400,
    "1e999",
    ".nan",
    "-.inf",
    "maybe",
    "~",
    "a==",
    "/w==",
]
tagged = st.builds(
    lambda key, tag, value: f"{key}: {tag} {value}\n",
    st.sampled_from(["schema", "towns", "x", "1"]),
    st.sampled_from(TAGS) | st.just(""),
    st.sampled_from(NASTY_SCALARS) | st.text(alphabet="0123456789abcdefx-:.+TZ ", max_size=12),
)
nested = st.builds(
    lambda depth, opener, closer: opener * depth + closer * depth,
    st.integers(0, 1100),
    st.sampled_from(["[", "{a: ", "- "]),
    st.just(""),
).map(lambda text: text if text.startswith("-") else _close(text))
recursive_alias = st.sampled_from(
    [
        "a: &x [*x]",
        "&x {a: *x}",
        "towns: &x [*x]",
        "towns: &x [{id: nishiki, paths: *x}]",
        "a: &x {b: [*x]}\n",
        "? &k [*k]\n: 1",
        "<<: &x {a: 1, <<: *x}",
    ]
)


def _close(text: str) -> str:
    closer = {"[": "]", "{": "}"}
    return text + "".join(closer[c] for c in reversed(text) if c in closer)


@st.composite
def mutated_data(draw: st.DrawFn) -> Any:
    """The real file's data with one to three mutations at random key paths."""
    data = copy.deepcopy(GOOD_DATA)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(GOOD_PATHS))
        action = draw(st.sampled_from(["delete", "replace", "unknown", "duplicate", "retype"]))
        parent: Any = data
        try:
            for part in path[:-1]:
                parent = parent[part]
            last = path[-1]
            parent[last]  # still there after an earlier mutation?
        except (KeyError, IndexError, TypeError):
            continue
        if action == "delete":
            del parent[last]
        elif action == "replace":
            parent[last] = draw(scalars)
        elif action == "retype":
            parent[last] = draw(documents)
        elif action == "unknown":
            target = parent[last] if isinstance(parent[last], dict) else parent
            if isinstance(target, dict):
                target[draw(keys)] = draw(scalars)
        elif isinstance(parent, list):
            parent.insert(int(last), copy.deepcopy(parent[int(last)]))
        elif isinstance(parent[last], list) and parent[last]:
            parent[last].append(copy.deepcopy(parent[last][0]))
    return data


@st.composite
def mutated_lines(draw: st.DrawFn) -> str:
    """The real file's text (comments, anchors and all) with a few lines changed."""
    lines = list(GOOD_LINES)
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(lines) - 1))
        action = draw(st.sampled_from(["delete", "duplicate", "value", "indent", "insert"]))
        line = lines[i]
        if action == "delete":
            del lines[i]
        elif action == "duplicate":
            lines.insert(i, line)
        elif action == "value" and ":" in line:
            key = line[: line.index(":") + 1]
            value = draw(st.sampled_from([*NASTY_SCALARS[:12], *map(str, GOOD_SCALARS)]))
            lines[i] = f"{key} {value}\n"
        elif action == "indent":
            lines[i] = " " * draw(st.integers(0, 3)) + line.lstrip(" ") if line.strip() else line
        else:
            lines.insert(i, draw(yaml_like_text) + "\n")
        if not lines:
            lines = ["\n"]
    return "".join(lines)


def _dump(data: Any) -> str:
    text: str = yaml.dump(data, Dumper=_Dumper, allow_unicode=True, sort_keys=False)
    return text


# --- properties ----------------------------------------------------------------


def test_the_real_topology_loads() -> None:
    assert isinstance(outcome(GOOD_TEXT), Topology)


@FUZZ
@given(st.one_of(documents, top_level))
def test_any_yaml_document_gives_a_model_or_a_located_error(data: Any) -> None:
    outcome(_dump(data))


@FUZZ
@given(st.text() | yaml_like_text | odd_text)
def test_any_text_gives_a_model_or_a_located_error(text: str) -> None:
    outcome(text)


@FUZZ
@given(st.one_of(tagged, nested, recursive_alias))
def test_yaml_aimed_at_the_constructors_gives_a_located_error(text: str) -> None:
    assert isinstance(outcome(text), TopologyError)


@settings(FUZZ, max_examples=120)
@given(mutated_data())
def test_a_mutated_topology_gives_a_model_or_a_located_error(data: Any) -> None:
    outcome(_dump(data))


@settings(FUZZ, max_examples=80)
@given(mutated_lines())
def test_a_topology_with_changed_lines_gives_a_model_or_a_located_error(text: str) -> None:
    outcome(text)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz-topology") / "topology.yaml"


@FUZZ
@given(st.binary(max_size=200) | mutated_lines().map(lambda t: t.encode()[:3000]))
def test_any_file_gives_a_model_or_a_one_line_user_error(scratch: Path, content: bytes) -> None:
    scratch.write_bytes(content)
    try:
        model = load(scratch)
    except TopologyError as exc:
        problems = exc.problems
    else:
        assert isinstance(model, Topology)
        return
    assert problems
    assert all(p.file == str(scratch) for p in problems)
    with pytest.raises(UserError) as caught:
        load_for_command(scratch)
    assert str(caught.value).startswith(str(scratch))
    assert len(str(caught.value).splitlines()) == 1


# --- regressions found by the properties above ---------------------------------


# Ten levels of ten aliases each: 10^10 values from 300 bytes.
BILLION_LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\n"
    for p, c in zip("abcdefghi", "bcdefghij", strict=True)
)


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("a: &x [*x]\n", 1, "nested more than 64 levels deep"),  # was RecursionError
        ("schema: 1\ntowns: &x [{paths: *x}]\n", 2, "nested more than 64 levels deep"),
        ("[" * 999 + "]" * 999, 1, "nested more than 64 levels deep"),  # was RecursionError
        ("? " + "[" * 990 + "]" * 990 + "\n: 1\n", 1, "expected a key"),  # was RecursionError
        ("schema: 1\nx: 2001-13-45\n", 2, "cannot read '2001-13-45' as timestamp"),  # ValueError
        ("x: 0000-01-01\n", 1, "year 0 is out of range"),  # was ValueError
        ("x: !!int abc\n", 1, "cannot read 'abc' as int"),  # was ValueError
        ("x: !!bool maybe\n", 1, "cannot read 'maybe' as bool"),  # was KeyError
        ("x: !!timestamp x\n", 1, "cannot read 'x' as timestamp"),  # was AttributeError
        ("x: !!int\n", 1, "cannot read '' as int"),  # was IndexError
        ("schema: 1" + "0" * 5000 + "\n", 1, "cannot read '1000"),  # was ValueError
        (
            "schema: 1\nx: \x1f\n",
            2,
            "character 0x001f is not allowed",
        ),  # was 2 lines, no line number
        ("schema: 1\nx: \ud800\n", 2, "character 0xd800 is not allowed"),  # UnicodeEncodeError
        (BILLION_LAUGHS, 1, "aliases expand to more than"),  # was hours and gigabytes
    ],
)
def test_what_crashed_the_loader_is_a_located_error(text: str, line: int, message: str) -> None:
    with pytest.raises(TopologyError) as caught:
        loads(text, NAME)
    (problem,) = caught.value.problems
    assert (problem.file, problem.line) == (NAME, line)
    assert message in problem.message
    assert len(problem.message) < 300


def test_a_key_that_is_not_printable_is_shown_quoted_on_one_line() -> None:
    with pytest.raises(TopologyError) as caught:
        loads('schema: 1\n"a\\nb": 1\n', NAME)
    (problem,) = [p for p in caught.value.problems if "unknown key" in p.message]
    assert str(problem).startswith("fuzz-topology.yaml:2: 'a\\nb': unknown key 'a\\nb'")
    assert len(str(problem).splitlines()) == 1  # was 2 lines: the key's newline as it is
