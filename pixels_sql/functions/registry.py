"""One small registry: every SQL function is a :class:`SqlFunction` in a family's FUNCTIONS dict."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd


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


def sql_function(signature: str, returns: str) -> Callable[[Callable[[], Any]], SqlFunction]:
    """Decorator turning a UDF factory into a :class:`SqlFunction` named after the factory."""

    def wrap(build: Callable[[], Any]) -> SqlFunction:
        return SqlFunction(build.__name__, signature, returns, build)

    return wrap


def results_frame(results: Sequence[Any | None], columns: Mapping[str, str]) -> pd.DataFrame:
    """A pandas frame for a STRUCT-returning UDF: one column per ``{column: attribute}`` of the
    result objects; a None result (NULL input) gives NULL in every column."""
    return pd.DataFrame(
        {
            column: [getattr(result, attribute) if result else None for result in results]
            for column, attribute in columns.items()
        }
    )
