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
        "_sanitize.py",
        "_enums.py",
        "_json.py",
        "_flat_json.py",
    ],
)
def test_the_data_layer_does_no_io_and_knows_no_sdk(name: str) -> None:
    imports = imports_of(PACKAGE / name)
    forbidden = ("opentelemetry", "httpx", "sqlite3", "socket", "hackagent_otel._delivery")
    assert {i for i in imports if i.startswith(forbidden)} == set()


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
