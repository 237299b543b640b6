"""The package's shape: imports point one way, no module imports itself back, settings are read
in one place (docs/architecture.md "Layers")."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from pixels_sql import config

PACKAGE = Path(__file__).resolve().parent.parent / "pixels_sql"

# Lowest first: a module may import from its own layer or a lower one, never a higher one.
# The first matching prefix names a module's layer; "pixels_sql" names the package's own
# __init__ only, so a new top-level module must be given its layer here.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("pixels_sql.errors", "pixels_sql.config")),
    ("io", ("pixels_sql.io",)),
    ("dicom", ("pixels_sql.dicom", "pixels_sql.deid")),
    ("functions", ("pixels_sql.functions",)),
    (
        "engine",
        (
            "pixels_sql.home",
            "pixels_sql.scripts",
            "pixels_sql.runner",
            "pixels_sql.dbt_sql",
            "pixels_sql.output",
            "pixels_sql.progress",
            "pixels_sql.tables",
            "pixels_sql.pipeline",
            "pixels_sql.session",
            "pixels_sql.jvm_classes",
            "pixels_sql.ingest",
            "pixels_sql.deidentify",
            "pixels_sql.gallery",
            "pixels_sql.servers",
        ),
    ),
    ("api", ("pixels_sql.pixels", "pixels_sql.cli", "pixels_sql")),
]


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every pixels_sql module ``name`` imports, at any depth of its code (a function-level
    import or one under TYPE_CHECKING is still a dependency)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                kept = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*kept, base] if base else kept)
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.add(full if full in modules else base)
    return {imported for imported in found if imported in modules and imported != name}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _layer(name: str) -> int:
    for rank, (_, prefixes) in enumerate(LAYERS):
        if any(
            name == prefix or (prefix != "pixels_sql" and name.startswith(prefix + "."))
            for prefix in prefixes
        ):
            return rank
    raise AssertionError(f"{name} is in no layer of tests/test_layout.py LAYERS")


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_module_imports_itself_back() -> None:
    assert _cycles(_graph()) == []


def test_the_cycle_finder_finds_a_loop() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_imports_point_down_the_layers() -> None:
    upward = [
        f"{name} ({LAYERS[_layer(name)][0]}) imports {target} ({LAYERS[_layer(target)][0]})"
        for name, targets in _graph().items()
        for target in targets
        if _layer(target) > _layer(name)
    ]
    assert upward == []


def test_the_pure_layers_import_no_spark() -> None:
    spark = []
    for name, path in _modules().items():
        if _layer(name) > _layer("pixels_sql.dicom"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            spark += [f"{name}: {n}" for n in names if n.split(".")[0] in ("pyspark", "py4j")]
    assert spark == []


def test_the_environment_table_of_the_docs_comes_from_the_settings() -> None:
    assert config.main(["--check"]) == 0


def test_a_setting_is_read_when_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PIXELS_SQL_FILE_TIMEOUT", raising=False)
    assert config.settings.file_timeout == 300.0
    monkeypatch.setenv("PIXELS_SQL_FILE_TIMEOUT", "2.5")
    assert config.settings.file_timeout == 2.5


def test_a_bad_setting_names_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIXELS_SQL_ISOLATION", "thread")
    with pytest.raises(config.SettingError, match="PIXELS_SQL_ISOLATION='thread'"):
        _ = config.settings.isolation
    monkeypatch.setenv("PIXELS_SQL_ZIP_MAX_MEMBER_MB", "lots")
    with pytest.raises(config.SettingError, match="PIXELS_SQL_ZIP_MAX_MEMBER_MB"):
        _ = config.settings.zip_max_member_bytes


def test_no_module_reads_the_environment_at_import() -> None:
    """Module-level code reads no environment variable: settings are read when used."""
    readers = []
    for name, path in _modules().items():
        for statement in ast.parse(path.read_text()).body:
            if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                continue
            text = ast.unparse(statement)
            if "os.environ" in text or "getenv(" in text:
                readers.append(f"{name}: {text.splitlines()[0]}")
    assert readers == []
