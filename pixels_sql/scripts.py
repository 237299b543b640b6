"""Run SQL scripts: split statements, substitute ${params}, parse-check with sqlglot, execute."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import sqlglot
from sqlglot.errors import ParseError, TokenError
from sqlglot.tokens import TokenType

# ${name} or ${name:-default}, as in POSIX shells.
_PARAM = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class ScriptError(Exception):
    """A problem in a script, located as ``file:line``."""

    def __init__(self, location: str, message: str) -> None:
        self.location = location
        self.message = message
        super().__init__(f"{location}: {message}")


@dataclass(frozen=True)
class Statement:
    """One SQL statement of a script, after parameter substitution."""

    sql: str
    source: str
    line: int  # line of the first SQL token (what people look for)
    text_line: int  # line where ``sql`` starts (leading comments included)

    @property
    def location(self) -> str:
        return f"{self.source}:{self.line}"


def script_files(targets: Iterable[str | Path]) -> list[Path]:
    """The ``.sql`` files named, folders expanded to their ``*.sql`` files in name order."""
    files: list[Path] = []
    for target in map(Path, targets):
        if target.is_dir():
            found = sorted(target.glob("*.sql"))
            if not found:
                raise ScriptError(str(target), "folder holds no .sql files")
            files.extend(found)
        elif target.is_file():
            files.append(target)
        else:
            raise ScriptError(str(target), "no such script or folder")
    return files


def substitute(text: str, params: Mapping[str, str], source: str) -> str:
    """Replace ``${name}`` / ``${name:-default}``; a missing parameter is an error with its line."""

    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in params:
            return params[name]
        if default is not None:
            return default
        line = text.count("\n", 0, match.start()) + 1
        raise ScriptError(
            f"{source}:{line}", f"parameter ${{{name}}} is not set (pass --param {name}=...)"
        )

    return _PARAM.sub(replace, text)


def split_statements(text: str, source: str) -> list[Statement]:
    """Split SQL text on top-level semicolons, using sqlglot's tokenizer (quotes, comments)."""
    try:
        tokens = sqlglot.tokenize(text, read="spark")
    except TokenError as exc:
        raise ScriptError(source, f"cannot tokenize: {exc}") from exc
    statements: list[Statement] = []
    start: int | None = None  # where the current statement's text begins
    boundary = 0  # just after the previous semicolon: leading comments belong to the statement
    line = 1
    for token in tokens:
        if token.token_type == TokenType.SEMICOLON:
            if start is not None:
                statements.append(_statement(text, start, token.start, source, line))
            start = None
            boundary = token.end + 1
        elif start is None:
            start = boundary
            line = text.count("\n", 0, token.start) + 1
    if start is not None:
        statements.append(_statement(text, start, len(text), source, line))
    return statements


def _statement(text: str, start: int, end: int, source: str, line: int) -> Statement:
    chunk = text[start:end]
    leading = len(chunk) - len(chunk.lstrip())
    text_line = text.count("\n", 0, start + leading) + 1
    return Statement(chunk.strip(), source, line, text_line)


def parse_check(statement: Statement, dialect: str = "spark") -> None:
    """Parse a statement with sqlglot; raise ScriptError at the failing line."""
    try:
        sqlglot.parse_one(statement.sql, read=dialect)
    except ParseError as exc:
        detail = exc.errors[0] if exc.errors else {}
        line = statement.text_line + int(detail.get("line") or 1) - 1
        message = str(detail.get("description") or exc).splitlines()[0]
        raise ScriptError(f"{statement.source}:{line}", f"SQL does not parse: {message}") from exc


def load_scripts(
    targets: Iterable[str | Path], params: Mapping[str, str], *, check: bool = True
) -> list[Statement]:
    """Every statement of the scripts in order; all are parse-checked before any runs."""
    statements: list[Statement] = []
    for path in script_files(targets):
        source = str(path)
        text = substitute(path.read_text(encoding="utf-8"), params, source)
        statements.extend(split_statements(text, source))
    if check:
        for statement in statements:
            parse_check(statement)
    return statements


def iter_sql(text: str, params: Mapping[str, str], source: str = "<sql>") -> Iterator[Statement]:
    """Statements of one SQL string (used by ``pixels-sql sql``)."""
    yield from split_statements(substitute(text, params, source), source)
