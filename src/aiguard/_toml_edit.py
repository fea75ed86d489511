"""Editing one table of a TOML control file as text, so everything else stays as written.

Sans-I/O: each function takes the file's text and returns the new text (or ``None`` when the edit
cannot be made safely as text; the caller then writes the whole file afresh). Comments, blank
lines, key order and the other tables are kept byte for byte; a replaced value keeps the comment
after it on its line. The caller checks that the new text parses to the state it meant to write.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Mapping
from typing import Any

_HEADER = re.compile(r"^\s*\[(?!\[)")
_BARE = re.compile(r"^[A-Za-z0-9_-]+$")
_KEY_LINE = re.compile(r"^(\s*)([A-Za-z0-9_-]+|\"[^\"\\]*\")\s*=\s*(.*?)(\r?\n)?$", re.DOTALL)


def string(value: str) -> str:
    """A TOML basic string for ``value`` (any text, control characters escaped).

    Example:
        >>> string('say "hi"\\n')
        '"say \\\\"hi\\\\"\\\\n"'
    """
    text = json.dumps(value, ensure_ascii=False)  # escapes quotes, backslashes, C0 controls
    return text.replace("\x7f", "\\u007f")  # TOML wants DEL escaped too; JSON does not


def key(name: str) -> str:
    """``name`` as a TOML key: bare when it can be, else quoted."""
    return name if _BARE.match(name) else string(name)


def value(v: Any) -> str:
    """A TOML value for a bool, number or string."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return json.dumps(v)
    return string(str(v))


def lines_of(text: str) -> list[str]:
    """``text`` split after each newline (only ``\\n``: TOML's lines end there, while
    ``str.splitlines`` also splits at characters a TOML string may hold, e.g. U+0085)."""
    parts = text.split("\n")
    out = [p + "\n" for p in parts[:-1]]
    return [*out, parts[-1]] if parts[-1] else out


def header_path(line: str) -> tuple[str, ...] | None:
    """The key path of a table header line (``[features."a b"]`` -> ``("features", "a b")``),
    or None when the line is not one."""
    if not _HEADER.match(line):
        return None
    try:
        node: Any = tomllib.loads(line.strip() + "\n")
    except tomllib.TOMLDecodeError:
        return None
    path: list[str] = []
    while isinstance(node, dict) and len(node) == 1:
        (name, node), *_ = node.items()
        path.append(name)
    return tuple(path) if node == {} else None


def sections(lines: list[str]) -> list[tuple[tuple[str, ...] | None, int, int]]:
    """``(path, start, end)`` of each part of the file: the lines before the first header
    (path None), then each table from its header line to the line before the next header."""
    starts: list[tuple[tuple[str, ...] | None, int]] = [(None, 0)]
    for i, line in enumerate(lines):
        path = header_path(line)
        if path is not None:
            starts.append((path, i))
    out = []
    for n, (path, start) in enumerate(starts):
        end = starts[n + 1][1] if n + 1 < len(starts) else len(lines)
        out.append((path, start, end))
    return out


def _split_comment(rest: str) -> tuple[str, str]:
    """``rest`` (what follows ``key =``) as (value, the comment after it with its spacing)."""
    for i, ch in enumerate(rest):
        if ch == "#":
            try:
                tomllib.loads(f"v = {rest[:i]}\n")
            except tomllib.TOMLDecodeError:
                continue
            head = rest[:i].rstrip()
            return head, rest[len(head) :]
    return rest.rstrip(), ""


def _end_of_entries(lines: list[str], start: int, end: int) -> int:
    """Where a new key goes in a table: after its last key line (before trailing blank lines and
    comments, which belong to what follows)."""
    last = start
    for i in range(start + 1, end):
        stripped = lines[i].strip()
        if stripped and not stripped.startswith("#"):
            last = i
    return last + 1


def set_keys(text: str, path: tuple[str, ...], changes: Mapping[str, Any]) -> str | None:
    """``text`` with the table at ``path`` given ``changes`` (a value of None removes the key),
    the table appended when missing; None when a key to change spans several lines or is
    written in a way this editor does not follow (the caller then rewrites the file)."""
    lines = lines_of(text)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    found = [(s, e) for p, s, e in sections(lines) if p == path]
    if len(found) > 1:
        return None
    if not found:
        wanted = [f"{key(k)} = {value(v)}\n" for k, v in changes.items() if v is not None]
        block = [f"[{'.'.join(key(p) for p in path)}]\n", *wanted]
        if lines and lines[-1].strip():
            block.insert(0, "\n")
        return "".join([*lines, *block])
    start, end = found[0]
    todo = dict(changes)
    for i in range(start + 1, end):
        m = _KEY_LINE.match(lines[i])
        if m is None:
            continue
        indent, written, rest, newline = m.group(1), m.group(2), m.group(3), m.group(4) or "\n"
        name = json.loads(written) if written.startswith('"') else written
        if name not in todo:
            continue
        old, comment = _split_comment(rest)
        try:
            tomllib.loads(f"v = {old}\n")
        except tomllib.TOMLDecodeError:
            return None  # a value over several lines, or not a value at all
        new = todo.pop(name)
        if new is None:
            lines[i] = ""
        else:
            lines[i] = f"{indent}{written} = {value(new)}{comment}{newline}"
    at = _end_of_entries(lines, start, end)
    added = [f"{key(k)} = {value(v)}\n" for k, v in todo.items() if v is not None]
    lines[at:at] = added
    return "".join(lines)


def replace_table(text: str, path: tuple[str, ...], entries: Mapping[str, Any]) -> str | None:
    """``text`` with the body of the table at ``path`` replaced by ``entries`` (its comment
    lines kept), or the table appended; None when the table is not found exactly once as a
    header but the text mentions it otherwise (e.g. as an inline table)."""
    lines = lines_of(text)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    found = [(s, e) for p, s, e in sections(lines) if p == path]
    if len(found) > 1:
        return None
    body = [f"{key(k)} = {value(v)}\n" for k, v in entries.items() if v is not None]
    if not found:
        block = [f"[{'.'.join(key(p) for p in path)}]\n", *body]
        if lines and lines[-1].strip():
            block.insert(0, "\n")
        return "".join([*lines, *block])
    start, end = found[0]
    kept = [ln for ln in lines[start + 1 : end] if ln.strip().startswith("#")]
    trailing = ["\n"] if end < len(lines) else []
    lines[start + 1 : end] = [*kept, *body, *trailing]
    return "".join(lines)


def line_of(text: str, path: tuple[str, ...], field: str | None = None) -> int | None:
    """The 1-based line of the table at ``path`` (of its ``field`` line when given and found)."""
    lines = lines_of(text)
    for p, start, end in sections(lines):
        if p != path:
            continue
        if field is not None:
            for i in range(start + 1, end):
                m = _KEY_LINE.match(lines[i])
                if m is None:
                    continue
                written = m.group(2)
                if (json.loads(written) if written.startswith('"') else written) == field:
                    return i + 1
        return start + 1
    return None
