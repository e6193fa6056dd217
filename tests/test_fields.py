"""The plain checks the pages and the command line use, at the edges of each rule."""

from collections.abc import Callable

import pytest

from chat.fields import (
    is_valid_emoji,
    is_valid_nonce,
    is_valid_password,
    is_valid_room_name,
    is_valid_username,
)

Check = Callable[[object], bool]
# For each check: values at the edges of its rule that pass, and values just past them.
CASES: dict[str, tuple[Check, list[object], list[object]]] = {
    "username": (
        is_valid_username,
        ["abc", "A" * 32, "a_b.c-d", "0.9"],
        ["ab", "a" * 33, "a b", "é" * 3, "abc\n", "ab\x00c", "", 123, None, b"abc"],
    ),
    "password": (
        is_valid_password,
        ["x" * 8, "x" * 1024, " " * 8, "pässwörd"],
        ["x" * 7, "x" * 1025, "", "x" * 7 + "\ud800", 12345678, None],
    ),
    "room name": (
        is_valid_room_name,
        ["a", "x" * 64, "room-1", "-"],
        ["", "x" * 65, "Room", "a_b", "a b", "a\n", 1, None],
    ),
    "nonce": (
        is_valid_nonce,
        ["n", "n" * 64, " ", "ü" * 64],
        ["", "n" * 65, "a\x00", "\ud800", 1, None],
    ),
}


@pytest.mark.parametrize(
    ("check", "value", "valid"),
    [
        pytest.param(check, value, valid, id=f"{name}-{valid}-{value!r:.20}")
        for name, (check, good, bad) in CASES.items()
        for values, valid in ((good, True), (bad, False))
        for value in values
    ],
)
def test_check(check: Check, value: object, valid: bool) -> None:
    assert check(value) is valid


def test_emoji_check() -> None:
    """The plain emoji check, for callers outside pydantic (tests/test_frames.py covers the
    forms one by one)."""
    assert is_valid_emoji("👍")
    assert is_valid_emoji(":tada:")
    assert not is_valid_emoji("tada")
    assert not is_valid_emoji("\ud83d")
