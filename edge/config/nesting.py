"""A bound on how deeply tables and arrays nest, so a crafted file is a config error, not a RecursionError.

The deepest real key is three levels down (``emg.serial.baudrate``); anything nested more than
:data:`MAX_DEPTH` levels is refused. tomllib itself recurses once per inline table or array, so a few hundred
``{a = {a = ...}}`` exhaust the stack before any validation could run: :func:`check_text` scans the text for
bracket depth first (skipping strings and comments), and :func:`check_data` bounds the parsed document,
where dotted keys, table headers and environment overrides add levels without brackets.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from typing import Any

MAX_DEPTH = 16

_MESSAGE = f"nested more than {MAX_DEPTH} levels deep"


def check_text(text: str, where: str) -> list[tuple[str, str]]:
    """One error if brackets in ``text`` nest deeper than MAX_DEPTH, naming the key being assigned."""
    found = _too_deep_bracket(text)
    if found is None:
        return []
    outer, header = found
    line = text.count("\n", 0, outer) + 1
    message = f"{_MESSAGE} (line {line})"
    if header is None:  # the brackets are a table header
        return [(where, message)]
    keys = _assigned_key(text, outer, header)
    return [(".".join(keys), message) if keys else (where, message)]


def check_data(
    data: Mapping[str, Any], sources: Mapping[tuple[str, ...], str] | None = None
) -> list[tuple[str, str]]:
    """One error naming the first table or array (in file order) more than MAX_DEPTH levels down."""
    stack: list[tuple[tuple[str, ...], Any]] = [((), data)]
    while stack:
        path, node = stack.pop()
        if len(path) > MAX_DEPTH:
            message = _MESSAGE
            source = next((name for keys, name in (sources or {}).items() if keys[: len(path)] == path), None)
            if source is not None:
                message += f" (set by environment variable {source})"
            return [(".".join(path), message)]
        items = node.items() if isinstance(node, Mapping) else enumerate(node)
        children = [((*path, str(key)), child) for key, child in items if isinstance(child, dict | list)]
        stack.extend(reversed(children))
    return []


# --- scanning the text -----------------------------------------------------------------------------------


def _too_deep_bracket(text: str) -> tuple[int, str | None] | None:
    """Where the outermost bracket of the first too-deep nest opened, and the table header in force then
    (None when that bracket is itself a table header). Linear in the text; never raises."""
    depth = 0
    outer = 0
    at_line_start = True  # only whitespace since the last newline
    in_header = False
    header = ""
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "#":
            end = text.find("\n", i)
            i = n if end < 0 else end
            continue
        if c in "\"'":
            i = _skip_string(text, i)
            at_line_start = False
            continue
        if c in "[{":
            if depth == 0:
                outer = i
                in_header = c == "[" and at_line_start
            depth += 1
            if depth > MAX_DEPTH:
                return outer, None if in_header else header
        elif c in "]}" and depth > 0:
            depth -= 1
            if depth == 0 and in_header:
                header = text[outer : i + 1]
                in_header = False
        if c == "\n":
            at_line_start = True
        elif not c.isspace():
            at_line_start = False
        i += 1
    return None


def _skip_string(text: str, i: int) -> int:
    """Index just past the TOML string starting at ``i`` (or where an unterminated one gives up)."""
    quote = text[i]
    n = len(text)
    if text.startswith(quote * 3, i):
        j = i + 3
        while j < n:
            if quote == '"' and text[j] == "\\":
                j += 2
                continue
            if text.startswith(quote * 3, j):
                j += 3
                # Up to two quotes may end the content right before the closing delimiter.
                extra = 0
                while j < n and text[j] == quote and extra < 2:
                    j += 1
                    extra += 1
                return j
            j += 1
        return n
    j = i + 1
    while j < n:
        ch = text[j]
        if quote == '"' and ch == "\\":
            j += 2
            continue
        if ch == quote:
            return j + 1
        if ch == "\n":
            return j  # invalid TOML: tomllib will say so
        j += 1
    return n


def _assigned_key(text: str, outer: int, header: str) -> list[str]:
    """Key path of ``key = [...`` whose value opens at ``outer``, under ``header``; [] if not parseable."""
    line_start = text.rfind("\n", 0, outer) + 1
    before = text[line_start:outer].rstrip()
    if not before.endswith("="):
        return []
    try:
        table = _first_path(tomllib.loads(header)) if header else []
        key = _first_path(tomllib.loads(before + " 0"))
    except tomllib.TOMLDecodeError:
        return []
    return table + key


def _first_path(data: Any) -> list[str]:
    """The keys down the only branch of a parsed one-key document such as ``{"a": {"b": 0}}``."""
    keys: list[str] = []
    while True:
        if isinstance(data, list) and data:
            data = data[-1]
        if not isinstance(data, dict) or not data:
            return keys
        key, data = next(iter(data.items()))
        keys.append(key)
