"""YAML text -> Python data, every failure one line: the loaders print the message and exit 2.

PyYAML's reader errors span two lines, a deeply nested document overflows the recursion limit in the
composer, and non-UTF-8 bytes fail before YAML sees them; each becomes a ``ConfigError`` naming ``what``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from lanterna.errors import ConfigError


def _problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    if isinstance(exc, yaml.reader.ReaderError):
        return f" (character {exc.position}): {exc.reason}"
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return f"{where}: {problem}"


def parse_yaml(text: str, what: str) -> Any:
    """``yaml.safe_load`` with one-line ``ConfigError``s."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} is not valid YAML{_problem(exc)}") from None
    except RecursionError:
        raise ConfigError(f"{what} is nested too deeply") from None


def read_text(path: Path, what: str) -> str:
    """The file as UTF-8 text; a missing, unreadable or non-UTF-8 file is a ``ConfigError``."""
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        why = "not found" if isinstance(exc, FileNotFoundError) else (exc.strerror or str(exc))
        raise ConfigError(f"{what} {path}: cannot read file ({why})") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} {path}: not UTF-8 text (byte {exc.start})") from None
