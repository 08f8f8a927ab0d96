"""The README's settings tables are the settings table, rendered.

Each table stands between ``<!-- settings: NAME -->`` and ``<!-- end settings -->``;
``python tests/test_readme_settings.py`` writes them anew after a row changed.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hackagent_otel._config import Settings
from hackagent_otel._settings_table import markdown_table, rows
from hackagent_otel.bridge._settings import BridgeSettings

README = Path(__file__).resolve().parents[1] / "README.md"

#: Each generated table: its name in the README's markers, and the table.
TABLES = {
    "configure()": markdown_table(rows(Settings), "argument"),
    "hackagent-otel bridge": markdown_table(rows(BridgeSettings), "flag"),
}


def _block(name: str) -> re.Pattern[str]:
    return re.compile(
        rf"(<!-- settings: {re.escape(name)} -->\n)(.*?)(<!-- end settings -->)", re.DOTALL
    )


def rendered(text: str) -> str:
    """``text`` with every generated table written anew."""
    for name, table in TABLES.items():
        found = _block(name).search(text)
        if found is not None:
            text = text[: found.start(2)] + table + text[found.end(2) :]
    return text


@pytest.mark.parametrize("name", TABLES)
def test_the_readme_shows_the_settings_table(name: str) -> None:
    found = _block(name).search(README.read_text())
    assert found is not None, f"README.md has no <!-- settings: {name} --> block"
    assert found[2] == TABLES[name], "run `python tests/test_readme_settings.py`"


def test_every_app_setting_configure_takes_is_one_of_its_arguments() -> None:
    import inspect

    import hackagent_otel

    parameters = inspect.signature(hackagent_otel.configure).parameters
    assert {row.name for row in rows(Settings) if row.configure_argument} <= set(parameters)


if __name__ == "__main__":
    README.write_text(rendered(README.read_text()))
