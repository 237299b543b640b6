"""Run SQL scripts: split statements, substitute ${params}, parse-check with sqlglot, execute."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import sqlglot
from sqlglot.errors import ParseError, TokenError
from sqlglot.tokens import TokenType

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

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


# Where a ${param} stands decides how its value is written (see substitute()).
CODE, STRING, IDENTIFIER, COMMENT = "code", "string", "identifier", "comment"
# Outside quotes a value must be one of these: it becomes part of the statement's syntax.
_IDENTIFIER_VALUE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER_VALUE = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


def contexts(text: str, source: str) -> list[tuple[int, int, str]]:
    """``(start, end, kind)`` spans of ``text`` by Spark SQL's lexical rules: string literals
    ('…' and "…", backslash escapes), back-quoted identifiers (`` `…` ``, doubled back-quotes),
    ``--`` and ``/* */`` comments, and code. An unterminated quote or comment is an error with
    the line it starts on."""
    spans: list[tuple[int, int, str]] = []
    position, start, length = 0, 0, len(text)
    while position < length:
        char = text[position]
        pair = text[position : position + 2]
        if char in "'\"`" or pair in ("--", "/*"):
            if position > start:
                spans.append((start, position, CODE))
            end = _end_of(text, position, source)
            kind = {"'": STRING, '"': STRING, "`": IDENTIFIER}.get(char, COMMENT)
            spans.append((position, end, kind))
            position = start = end
        else:
            position += 1
    if start < length:
        spans.append((start, length, CODE))
    return spans


def _end_of(text: str, start: int, source: str) -> int:
    """Index just after the literal, identifier or comment opening at ``start``."""
    opening = text[start]
    if text.startswith("--", start):
        newline = text.find("\n", start)
        return len(text) if newline < 0 else newline + 1
    if text.startswith("/*", start):
        close = text.find("*/", start + 2)
        if close < 0:
            _unterminated(text, start, source, "comment /*")
        return close + 2
    position = start + 1
    while position < len(text):
        char = text[position]
        if char == "\\" and opening != "`":
            position += 2
        elif char == opening:
            if opening == "`" and text.startswith("``", position):
                position += 2  # a doubled back-quote stands for one
            else:
                return position + 1
        else:
            position += 1
    _unterminated(text, start, source, f"quote {opening}")
    raise AssertionError  # unreachable: _unterminated raises


def _unterminated(text: str, start: int, source: str, what: str) -> None:
    line = text.count("\n", 0, start) + 1
    raise ScriptError(f"{source}:{line}", f"unterminated {what} (opened on this line)")


def escape_string(value: str) -> str:
    """The body of a Spark SQL string literal denoting ``value`` (backslash escapes)."""
    return value.replace("\\", "\\\\").replace("'", "\\'").replace('"', '\\"')


def parameter_names(text: str, source: str) -> set[str]:
    """Names of the ${params} a script uses (comments excluded)."""
    return {
        match.group(1)
        for start, end, kind in contexts(text, source)
        if kind != COMMENT
        for match in _PARAM.finditer(text, start, end)
    }


def substitute(text: str, params: Mapping[str, str], source: str) -> str:
    """Replace ``${name}`` / ``${name:-default}`` by values that stay values.

    Inside a string literal the value is escaped as literal text; inside a back-quoted
    identifier, as identifier text; elsewhere it must be a plain identifier (written
    back-quoted) or a number, so no value can add SQL to a statement. Comments are left alone.
    A missing parameter is an error with its line.
    """
    pieces: list[str] = []
    for start, end, kind in contexts(text, source):
        if kind == COMMENT:
            pieces.append(text[start:end])
            continue
        pieces.append(
            _PARAM.sub(
                lambda match, kind=kind, at=start: _value(text, at, match, kind, params, source),
                text[start:end],
            )
        )
    return "".join(pieces)


def _value(
    text: str, at: int, match: re.Match[str], kind: str, params: Mapping[str, str], source: str
) -> str:
    """The text standing for one ${param} found at ``at + match.start()`` of ``text``."""
    name, default = match.group(1), match.group(2)
    location = f"{source}:{text.count(chr(10), 0, at + match.start()) + 1}"
    value = params.get(name, default)
    if value is None:
        raise ScriptError(
            location,
            f"parameter ${{{name}}} is not set (pass --param {name}=...)",
        )
    if kind == STRING:
        return escape_string(value)
    if kind == IDENTIFIER:
        return value.replace("`", "``")
    if _NUMBER_VALUE.fullmatch(value) or value.lower() in ("true", "false"):
        return value
    if _IDENTIFIER_VALUE.fullmatch(value):
        return f"`{value}`"
    raise ScriptError(
        location,
        f"parameter {name}={value!r} stands for a name or a number here: use letters, digits"
        " and _ only (or put ${" + name + "} inside quotes in the script)",
    )


def split_statements(text: str, source: str) -> list[Statement]:
    """Split SQL text on top-level semicolons, using sqlglot's tokenizer (quotes, comments)."""
    contexts(text, source)  # an unterminated quote or comment: an error with its line
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
    if re.match(r"(\s*--[^\n]*\n)*\s*EXECUTE\s+IMMEDIATE\b", statement.sql, re.IGNORECASE):
        # sqlglot has no grammar for it (it would parse it as an opaque command, warning on
        # stderr): the statement text is built at run time, where Spark checks it.
        return
    # sqlglot logs "Falling back to parsing as a 'Command'" for statements it has no grammar
    # for (SHOW TABLES IN x): not the user's concern, so not on their terminal.
    quiet = logging.getLogger("sqlglot")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        sqlglot.parse_one(statement.sql, read=dialect)
    except ParseError as exc:
        raise _not_parsing(statement, exc.errors[0] if exc.errors else {}) from exc
    finally:
        quiet.setLevel(level)


def _not_parsing(statement: Statement, detail: Mapping[str, object]) -> ScriptError:
    """Where the statement stops parsing, as Spark says it: the line and a caret under the
    token. sqlglot's own description names its internals ("Required keyword: 'expression'
    missing for <class ...Mul>"), so it is not shown."""
    line_in_statement = int(str(detail.get("line") or 1))
    token = str(detail.get("highlight") or "")
    end = int(str(detail.get("col") or 0))  # 1-based column of the token's last character
    lines = statement.sql.splitlines() or [""]
    text = lines[min(line_in_statement, len(lines)) - 1]
    start = max(0, end - len(token))
    caret = " " * start + "^" * max(1, len(token))
    near = f" near '{token}'" if token else ""
    return ScriptError(
        f"{statement.source}:{statement.text_line + line_in_statement - 1}:{start + 1}",
        f"SQL does not parse{near} (checked before anything runs; --no-parse-check leaves it"
        f" to Spark)\n  {text}\n  {caret}",
    )


def load_scripts(
    targets: Iterable[str | Path], params: Mapping[str, str], *, check: bool = True
) -> list[Statement]:
    """Every statement of the scripts in order; all are parse-checked before any runs.

    A parameter that no script uses is an error naming those they do use (a misspelled
    ``--param pathh=...`` must not run the pipeline without it)."""
    texts = [(str(path), path.read_text(encoding="utf-8")) for path in script_files(targets)]
    check_parameters(params, texts)
    statements: list[Statement] = []
    for source, text in texts:
        statements.extend(split_statements(substitute(text, params, source), source))
    if check:
        for statement in statements:
            parse_check(statement)
    return statements


def check_parameters(params: Mapping[str, str], texts: Iterable[tuple[str, str]]) -> None:
    """Raise ScriptError when ``params`` names a parameter that none of the texts uses."""
    known: set[str] = set()
    for source, text in texts:
        known |= parameter_names(text, source)
    unknown = sorted(set(params) - known)
    if unknown:
        raise ScriptError(
            "--param",
            f"unknown parameter{'s' if len(unknown) > 1 else ''} {', '.join(unknown)};"
            f" the SQL takes: {', '.join(sorted(known)) or 'none'}",
        )


# A statement that writes only rows which a query before it counted says so in a comment:
# ``-- pixels-sql: skip if files_to_read = 0``. A runner that saw that count be 0 in the same
# run skips the statement: it would read and write nothing, yet cost a Spark job and metastore
# calls (seconds per statement on every no-op re-run). Run any other way, the comment is a
# comment and the statement writes nothing, so the tables come out the same.
_SKIP_IF = re.compile(r"--\s*pixels-sql:\s*skip if ([A-Za-z_][A-Za-z0-9_]*)\s*=\s*0\s*")


def skip_counts(statement: Statement) -> list[str]:
    """The counts the ``-- pixels-sql: skip if <name> = 0`` comments of ``statement`` name:
    what the statement works through."""
    names = []
    for start, end, kind in contexts(statement.sql, statement.source):
        if kind != COMMENT:
            continue
        match = _SKIP_IF.fullmatch(statement.sql[start:end].strip())
        if match:
            names.append(match.group(1))
    return names


def skip_reason(statement: Statement, counts: Mapping[str, object]) -> str | None:
    """``"<name> = 0"`` when a ``-- pixels-sql: skip if <name> = 0`` comment of ``statement``
    names a count that ``counts`` (the values queries of this run returned) holds as 0."""
    for name in skip_counts(statement):
        if counts.get(name) == 0:
            return f"{name} = 0"
    return None


# The first keywords of statements that return rows (a query), as opposed to commands.
RESULT_KEYWORDS = frozenset(
    {"SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXPLAIN", "VALUES", "TABLE", "FROM"}
)


def returns_rows(sql: str) -> bool:
    """Whether ``sql`` is a query (its rows are fetched) rather than a command."""
    code = [line for line in sql.splitlines() if not line.strip().startswith("--")]
    first = " ".join(code).lstrip("( ").split(None, 1)
    return bool(first) and first[0].upper() in RESULT_KEYWORDS


# The `--` comment lines (and blank space) before a statement's first token.
_LEADING_COMMENTS = re.compile(r"\A(?:\s*--[^\n]*\n)*\s*")


def without_leading_comments(sql: str) -> str:
    """``sql`` from its first token on: the ``--`` comment lines before it left out."""
    leading = _LEADING_COMMENTS.match(sql)
    assert leading is not None  # the pattern matches the empty string
    return sql[leading.end() :]


# `CREATE OR REPLACE VIEW <name> AS <query>`, the plain form: no column list, comment, schema
# binding or properties (an ALTER VIEW ... AS keeps those of the view it changes, so only the
# plain form means the same as one). A name is one to three parts, each a word or back-quoted.
_NAME_PART = r"(?:`(?:[^`]|``)+`|\w+)"
_PLAIN_VIEW_REPLACEMENT = re.compile(
    rf"CREATE\s+OR\s+REPLACE\s+VIEW\s+(?P<name>{_NAME_PART}(?:\.{_NAME_PART}){{0,2}})"
    r"\s+AS\s+(?P<query>.+)",
    re.IGNORECASE | re.DOTALL,
)


def view_replacement(sql: str) -> tuple[tuple[str, ...], str] | None:
    """``(name parts, query)`` of a plain ``CREATE OR REPLACE VIEW <name> AS <query>``
    statement (after any leading ``--`` comment lines; the parts unquoted), None for any other
    statement."""
    match = _PLAIN_VIEW_REPLACEMENT.fullmatch(without_leading_comments(sql).rstrip())
    if match is None:
        return None
    parts = tuple(
        part[1:-1].replace("``", "`") if part.startswith("`") else part
        for part in re.findall(_NAME_PART, match["name"])
    )
    return parts, match["query"]


def keep_values_as_written(spark: SparkSession) -> None:
    """Turn off Spark's own ``${...}`` substitution in ``spark``: the values substituted here
    are final (escaped), and Spark would rewrite a ``${x}`` inside them."""
    spark.conf.set("spark.sql.variable.substitute", "false")


def iter_sql(text: str, params: Mapping[str, str], source: str = "<sql>") -> Iterator[Statement]:
    """Statements of one SQL string (used by ``pixels-sql sql``)."""
    check_parameters(params, [(source, text)])
    yield from split_statements(substitute(text, params, source), source)
