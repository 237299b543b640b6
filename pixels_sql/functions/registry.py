"""One small registry: every SQL function is a :class:`SqlFunction` in a family's FUNCTIONS dict."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from pixels_sql.errors import FunctionReadError
from pixels_sql.io.isolation import run_isolated

# Argument names that mean a file: one the function reads, a folder it writes into. A server
# checks them for its clients (ClientGuard.java); the signatures are the one place they are said.
READ_PATH = "path"
WRITE_PATH = "destination"


@dataclass(frozen=True)
class SqlFunction:
    """A SQL function: its name, its SQL signature for the docs, and how to build its UDF.

    ``build`` is called at registration time (not import time) so that importing the package
    needs no SparkContext.
    """

    name: str
    signature: str
    returns: str
    build: Callable[[], Any]

    @property
    def doc(self) -> str:
        return (self.build.__doc__ or "").strip()

    @property
    def arguments(self) -> list[str]:
        """The argument names of the signature, optional ones included, in order."""
        inner = self.signature[self.signature.index("(") + 1 : self.signature.rindex(")")]
        pieces = inner.replace("[", "").replace("]", "").split(",")
        return [piece.split()[0] for piece in pieces if piece.strip()]

    def argument_positions(self, name: str) -> list[int]:
        """Where the arguments called ``name`` are: a server checks the paths clients pass
        (:data:`READ_PATH`, :data:`WRITE_PATH`) against its allowed roots."""
        return [index for index, argument in enumerate(self.arguments) if argument == name]


def sql_function(signature: str, returns: str) -> Callable[[Callable[[], Any]], SqlFunction]:
    """Decorator turning a UDF factory into a :class:`SqlFunction` named after the factory."""

    def wrap(build: Callable[[], Any]) -> SqlFunction:
        return SqlFunction(build.__name__, signature, returns, build)

    return wrap


# How a family reads a batch: (the calling function's name, for its errors; the argument
# columns) -> one result object per row, None for a NULL path.
BatchResults = Callable[[str, Sequence[pd.Series]], Sequence[Any | None]]


@dataclass(frozen=True)
class ResultFamily:
    """The four SQL functions over one kind of per-file result (a header read, a rendering, a
    de-identification), as Spark's ``try_`` functions pair with their failing ones:

    - ``name``: the result's ``value`` column; a file's failure fails the query, naming it;
    - ``try_<name>``: the same, NULL for a file that fails;
    - ``<name>_error``: the reason code of a failure, NULL for a file that does not fail;
    - ``<name>_result``: every column of the result in one STRUCT (``result_type``), so that
      each file is opened once, good or bad.

    ``results`` reads a batch into result objects (with ``reason`` and ``message``);
    ``columns`` maps the STRUCT's columns to their attributes, ``value`` among them.
    ``arguments`` is the SQL argument list of the four, ``error_arguments`` the error
    function's where it documents fewer."""

    name: str
    arguments: str
    value: str
    value_type: str
    result_type: str
    results: BatchResults
    columns: Mapping[str, str]
    error_arguments: str | None = None

    def functions(self, *, value: str, try_: str, error: str, result: str) -> list[SqlFunction]:
        """The four, in that order, each documented by its text (with a SQL example)."""
        name, value_type, error_arguments = self.name, self.value_type, self.error_arguments
        return [
            _udf_function(name, self.arguments, value_type, value, self._value_or_raise),
            _udf_function(f"try_{name}", self.arguments, value_type, try_, self._value),
            _udf_function(
                f"{name}_error", error_arguments or self.arguments, "string", error, self._reason
            ),
            _udf_function(f"{name}_result", self.arguments, self.result_type, result, self.frame),
        ]

    def frame(self, function: str, columns: Sequence[pd.Series]) -> pd.DataFrame:
        """The STRUCT's columns for a batch (all NULL for a NULL path)."""
        return results_frame(self.results(function, columns), self.columns)

    def _value(self, function: str, columns: Sequence[pd.Series]) -> pd.Series:
        attribute = self.columns[self.value]
        results = self.results(function, columns)
        return pd.Series([getattr(r, attribute) if r else None for r in results], dtype=object)

    def _reason(self, function: str, columns: Sequence[pd.Series]) -> pd.Series:
        results = self.results(function, columns)
        return pd.Series([r.reason if r else None for r in results], dtype=object)

    def _value_or_raise(self, function: str, columns: Sequence[pd.Series]) -> pd.Series:
        attribute = self.columns[self.value]
        results = zip(columns[0], self.results(function, columns), strict=True)
        values = [value_or_raise(function, path, r, attribute) for path, r in results]
        return pd.Series(values, dtype=object)


def _udf_function(
    name: str,
    arguments: str,
    returns: str,
    doc: str,
    batch: Callable[[str, Sequence[pd.Series]], pd.Series | pd.DataFrame],
) -> SqlFunction:
    """A SqlFunction whose UDF runs ``batch(name, argument columns)``: a pandas UDF returning
    a Series, or a DataFrame for a STRUCT (pandas_udf tells the two by the return annotation)."""

    def build() -> Any:
        from pyspark.sql.functions import pandas_udf

        def udf(*columns: pd.Series) -> Any:
            return batch(name, columns)

        udf.__name__ = udf.__qualname__ = name  # the name Spark shows in plans and errors
        struct = returns.startswith("struct<")
        udf.__annotations__ = {
            "columns": pd.Series,
            "return": pd.DataFrame if struct else pd.Series,
        }
        return pandas_udf(udf, returns)  # type: ignore[call-overload]

    build.__doc__ = doc
    return SqlFunction(name, name + arguments, returns.upper(), build)


def results_frame(results: Sequence[Any | None], columns: Mapping[str, str]) -> pd.DataFrame:
    """A pandas frame for a STRUCT-returning UDF: one column per ``{column: attribute}`` of the
    result objects; a None result (NULL input) gives NULL in every column."""
    return pd.DataFrame(
        {
            column: [getattr(result, attribute) if result else None for result in results]
            for column, attribute in columns.items()
        }
    )


def read_rows(
    function: Callable[..., Any],
    rows: Sequence[tuple[Any, ...]],
    failure: Callable[[str, str], Any],
) -> list[Any | None]:
    """``function(*row)`` per row, computed in the helper process (io/isolation.py), so a file
    that crashes its reader costs only its own row; None for a row whose path (first value) is
    NULL."""
    present = [row for row in rows if row[0] is not None]
    results = iter(run_isolated(function, present, failure))
    return [None if row[0] is None else next(results) for row in rows]


def value_or_raise(
    function: str, path: str | None, result: Any | None, attribute: str
) -> Any | None:
    """``result.<attribute>``, or the file's failure raised as ``function``'s (what the
    non-``try_`` functions do); None for a NULL path."""
    if result is None:
        return None
    if result.reason is not None:
        raise FunctionReadError(function, str(path), result.reason, result.message or "")
    return getattr(result, attribute)
