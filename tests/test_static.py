"""The browser scripts put user data into the page as text only."""

import re
from pathlib import Path

import pytest

STATIC = Path(__file__).resolve().parent.parent / "static"
HTML_SINKS = re.compile(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(")


@pytest.mark.parametrize("script", sorted(STATIC.glob("*.js")), ids=lambda p: p.name)
def test_scripts_never_write_html(script: Path) -> None:
    """No script assigns HTML strings: every message, username and room name is textContent."""
    assert not HTML_SINKS.findall(script.read_text())


def test_there_are_scripts_to_check() -> None:
    """The check above looks at the room and admin scripts, not at an empty folder."""
    assert {p.name for p in STATIC.glob("*.js")} >= {"room.js", "admin.js"}
