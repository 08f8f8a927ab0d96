"""Imports point one way: the layering docs/architecture.md describes, checked on the source."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "hackagent_otel"


def imports_of(path: Path) -> set[str]:
    """Every module a file imports, at any depth (lazy imports inside functions too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def ours(imports: set[str]) -> set[str]:
    return {i for i in imports if i.startswith("hackagent_otel")}


def files(pattern: str) -> list[Path]:
    return sorted(PACKAGE.glob(pattern))


@pytest.mark.parametrize("path", files("_delivery/*.py"), ids=lambda p: p.name)
def test_delivery_depends_on_records_only(path: Path) -> None:
    allowed = (
        "hackagent_otel._delivery",
        "hackagent_otel._records",
        "hackagent_otel._forksafe",
        "hackagent_otel._throttle",
    )
    assert {i for i in ours(imports_of(path)) if not i.startswith(allowed)} == set()


@pytest.mark.parametrize(
    "name",
    [
        "_tracker.py",
        "_context.py",
        "_goals.py",
        "_coordinator.py",
        "_decorators.py",
        "_runs.py",
        "_tracer.py",
        "_propagation.py",
    ],
)
def test_the_tracker_side_uses_the_opentelemetry_api_only(name: str) -> None:
    imports = imports_of(PACKAGE / name)
    assert {i for i in imports if i.startswith("opentelemetry.sdk")} == set()
    assert {
        i
        for i in ours(imports)
        if i.startswith(("hackagent_otel._delivery", "hackagent_otel._setup"))
        or i.startswith(("hackagent_otel._processor", "hackagent_otel._exporter"))
    } == set()


@pytest.mark.parametrize(
    "name",
    [
        "_mapping.py",
        "_spanview.py",
        "_records.py",
        "semconv.py",
        *(str(path.relative_to(PACKAGE)) for path in files("_sanitize/*.py")),
        "_enums.py",
        "_json.py",
    ],
)
def test_the_data_layer_does_no_io_and_knows_no_sdk(name: str) -> None:
    imports = imports_of(PACKAGE / name)
    forbidden = ("opentelemetry", "httpx", "sqlite3", "socket", "hackagent_otel._delivery")
    assert {i for i in imports if i.startswith(forbidden)} == set()


#: The sanitizer's parts, and which of them (and of the package's leaf modules) each may
#: import: the table docs/architecture.md shows. Nothing else of ours.
SANITIZE_PARTS = {
    "_keys.py": set(),
    "_budget.py": set(),
    "_shapes.py": set(),
    "_memory.py": {"_forksafe", "_sanitize._budget", "_sanitize._keys", "_sanitize._shapes"},
    "_walk.py": {"_sanitize._budget", "_sanitize._keys", "_sanitize._memory", "_sanitize._shapes"},
    "_fast.py": {"_json", "_sanitize._budget", "_sanitize._keys", "_sanitize._memory"},
    "_flat_json.py": {"_sanitize._budget", "_sanitize._keys"},
    "_text.py": {"_sanitize._keys", "_sanitize._memory"},
    "_clients.py": {"_sanitize._keys"},
    "_sanitizer.py": {
        "_sanitize._budget",
        "_sanitize._clients",
        "_sanitize._fast",
        "_sanitize._flat_json",
        "_sanitize._keys",
        "_sanitize._memory",
        "_sanitize._shapes",
        "_sanitize._text",
        "_sanitize._walk",
    },
    "_logs.py": {"_sanitize._memory", "_sanitize._sanitizer"},
}


def test_every_part_of_the_sanitizer_is_in_the_table() -> None:
    parts = {path.name for path in files("_sanitize/*.py")} - {"__init__.py"}
    assert parts == set(SANITIZE_PARTS)


@pytest.mark.parametrize("name", sorted(SANITIZE_PARTS))
def test_the_sanitizers_parts_import_only_what_the_table_allows(name: str) -> None:
    # `from M import X` is recorded as M and as M.X: keep the names of modules.
    names = {
        i.removeprefix("hackagent_otel.") for i in ours(imports_of(PACKAGE / "_sanitize" / name))
    }
    modules = {n for n in names if (PACKAGE / f"{n.replace('.', '/')}.py").is_file()}
    assert modules == SANITIZE_PARTS[name]


def test_nothing_outside_the_sanitizer_reaches_into_its_parts() -> None:
    """Callers use what ``_sanitize/__init__.py`` exports."""
    for path in files("**/*.py"):
        if path.parent.name == "_sanitize":
            continue
        inner = {i for i in ours(imports_of(path)) if i.startswith("hackagent_otel._sanitize._")}
        assert inner == set(), path


@pytest.mark.parametrize("path", files("**/*.py"), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_nothing_but_the_cli_reaches_up_to_the_cli_demo_or_bridge_server(path: Path) -> None:
    if path.name in ("_cli.py", "__main__.py") or path.parent.name == "bridge":
        return
    top = ("hackagent_otel._cli", "hackagent_otel._demo", "hackagent_otel.bridge._server")
    assert {i for i in ours(imports_of(path)) if i.startswith(top)} == set()


@pytest.mark.parametrize("name", ["_forksafe.py", "_throttle.py"])
def test_the_leaf_utilities_import_nothing_of_ours(name: str) -> None:
    assert ours(imports_of(PACKAGE / name)) == set()


def test_the_settings_table_imports_nothing_of_ours() -> None:
    assert ours(imports_of(PACKAGE / "_settings_table.py")) == set()


@pytest.mark.parametrize(
    "name", ["_decode.py", "_decoded.py", "_decode_protobuf.py", "_decode_json.py", "_responses.py"]
)
def test_the_bridges_decoding_reads_bytes_and_makes_views_only(name: str) -> None:
    imports = imports_of(PACKAGE / "bridge" / name)
    forbidden = ("opentelemetry.sdk", "httpx", "sqlite3", "hackagent_otel._delivery")
    assert {i for i in imports if i.startswith(forbidden)} == set()
    packages = {"hackagent_otel", "hackagent_otel.bridge"}  # `from PACKAGE import module`
    allowed: tuple[str, ...] = ("hackagent_otel.bridge._decod", "hackagent_otel.bridge._throttle")
    allowed += ("hackagent_otel._spanview", "hackagent_otel.semconv")
    assert {i for i in ours(imports) - packages if not i.startswith(allowed)} == set()
