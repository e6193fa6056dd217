"""Client frames on the room WebSocket: what `parse_frame` accepts, and how it refuses the rest.

No server: the frames are parsed as the socket handler parses them, one text at a time.
"""

import json
import typing
from typing import Any

import pytest

from chat import fields, schemas
from chat.fields import BODY_MAX_CHARS, MESSAGE_ID_MAX, NONCE_MAX_CHARS
from chat.frames import (
    ClientFrame,
    DeleteFrame,
    EditFrame,
    FrameError,
    MessageFrame,
    ReactFrame,
    TypingFrame,
    parse_frame,
)

# One valid frame of every kind.
VALID: dict[str, dict[str, Any]] = {
    "message": {"type": "message", "body": "hello", "nonce": "n-1"},
    "typing": {"type": "typing"},
    "edit": {"type": "edit", "id": 7, "body": "hello again"},
    "delete": {"type": "delete", "id": 7},
    "react": {"type": "react", "id": 7, "emoji": "👍", "on": True},
}
# Never part of an error's detail: the client's input is not echoed.
MARKER = "s3cr3t-input"
# A value of every JSON type but the one named.
NOT_A_STRING = [7, 1.5, True, None, [MARKER], {MARKER: MARKER}]
NOT_AN_INT = ["7", 7.0, True, False, None, [7], {"id": 7}, MARKER]
NOT_A_BOOL = [1, 0, "true", None, [True], MARKER]
WRONG_TYPES: dict[str, list[Any]] = {
    "body": NOT_A_STRING,
    "nonce": [v for v in NOT_A_STRING if v is not None],  # null is no nonce at all
    "id": NOT_AN_INT,
    "emoji": NOT_A_STRING,
    "on": NOT_A_BOOL,
}


def text(frame: Any) -> str:
    return json.dumps(frame, ensure_ascii=False)


def parsed(frame: Any) -> ClientFrame:
    result = parse_frame(text(frame))
    assert not isinstance(result, FrameError), result
    return result


def refused(frame: Any, code: str = "invalid_message") -> FrameError:
    return refused_text(text(frame), code)


def refused_text(raw: str, code: str = "invalid_message") -> FrameError:
    """The refusal of a frame's text, checked to be one short sentence that echoes nothing."""
    result = parse_frame(raw)
    assert isinstance(result, FrameError), result
    assert result.code == code, result
    assert "\n" not in result.detail and len(result.detail) < 100, result.detail
    assert MARKER not in result.detail, result.detail
    return result


def message(body: Any, **more: Any) -> dict[str, Any]:
    return {"type": "message", "body": body, **more}


# --- Valid frames ----------------------------------------------------------------------------


def test_every_kind_of_frame_has_a_valid_example() -> None:
    """VALID covers every member of the union, so the tests below cover every frame kind."""
    members = typing.get_args(typing.get_args(ClientFrame)[0])
    kinds = {typing.get_args(m.model_fields["type"].annotation)[0] for m in members}
    assert kinds == set(VALID)


def test_message() -> None:
    frame = parsed(message("  hello \n", nonce="n-1"))
    assert frame == MessageFrame(type="message", body="hello", nonce="n-1")


@pytest.mark.parametrize("nonce", [{}, {"nonce": None}], ids=["absent", "null"])
def test_message_without_nonce(nonce: dict[str, Any]) -> None:
    assert parsed(message("hi", **nonce)) == MessageFrame(type="message", body="hi", nonce=None)


def test_typing() -> None:
    assert parsed({"type": "typing"}) == TypingFrame(type="typing")


def test_edit() -> None:
    frame = parsed({"type": "edit", "id": 7, "body": " new text "})
    assert frame == EditFrame(type="edit", id=7, body="new text")


def test_delete() -> None:
    assert parsed({"type": "delete", "id": 7}) == DeleteFrame(type="delete", id=7)


@pytest.mark.parametrize("on", [True, False])
def test_react(on: bool) -> None:
    frame = parsed({"type": "react", "id": 7, "emoji": ":tada:", "on": on})
    assert frame == ReactFrame(type="react", id=7, emoji=":tada:", on=on)


@pytest.mark.parametrize("kind", VALID)
def test_unknown_keys_are_ignored(kind: str) -> None:
    """A newer client's extra fields do not make its frames invalid."""
    plain = parsed(VALID[kind])
    assert parsed({**VALID[kind], "future": [1, {"x": None}], "Type": "other"}) == plain


@pytest.mark.parametrize("message_id", [1, MESSAGE_ID_MAX])
def test_id_bounds_accepted(message_id: int) -> None:
    assert parsed({"type": "delete", "id": message_id}) == DeleteFrame(type="delete", id=message_id)


def test_body_of_exactly_4000_characters_after_trimming() -> None:
    body = "é" * BODY_MAX_CHARS
    frame = parsed(message(" \t" + body + "\n "))
    assert isinstance(frame, MessageFrame)
    assert frame.body == body


def test_body_is_trimmed_as_python_trims() -> None:
    """Separators U+001C-U+001F and other Unicode blanks count as whitespace, as they always
    have on the socket."""
    frame = parsed(message("\x1c\u3000\xa0 hi \u2028\x1f"))
    assert isinstance(frame, MessageFrame)
    assert frame.body == "hi"


def test_nonce_of_64_characters() -> None:
    frame = parsed(message("hi", nonce="n" * NONCE_MAX_CHARS))
    assert isinstance(frame, MessageFrame)
    assert frame.nonce == "n" * NONCE_MAX_CHARS


def test_frame_of_64_kib() -> None:
    """The largest frame the socket takes parses like any other."""
    padding = " " * (64 * 1024 - len(text(message("hi"))))
    frame_text = text(message("hi" + padding))
    assert len(frame_text.encode()) == 64 * 1024
    assert parse_frame(frame_text) == MessageFrame(type="message", body="hi")


# --- invalid_json ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   ",
        "{",
        "{'type': 'typing'}",
        '{"type": "typing"} x',
        "NaN",
        '{"type": "typing", "x": NaN}',
        '{"type": "message", "body": "hi", "nonce": Infinity}',
        '{"type": "delete", "id": -Infinity}',
        "[" * 1025 + "]" * 1025,
        '{"a":' * 5000 + "0" + "}" * 5000,
    ],
)
def test_invalid_json(raw: str) -> None:
    """Not JSON at all, including NaN and Infinity, and nesting past 1024 levels."""
    assert refused_text(raw, "invalid_json") == FrameError(
        "invalid_json", "frame is not valid JSON"
    )


LONE_SURROGATES = {
    "escaped": r'{"type": "message", "body": "a\ud800b", "nonce": "n"}',
    "raw": '{"type": "message", "body": "a\ud800b", "nonce": "n"}',
}


@pytest.mark.parametrize("raw", LONE_SURROGATES.values(), ids=LONE_SURROGATES)
def test_lone_surrogate_is_not_json(raw: str) -> None:
    """A lone surrogate is no Unicode text (the REST API answers 422 "Invalid JSON"), and no
    PostgreSQL could not store it: its frame is refused before anything reads its nonce."""
    assert refused_text(raw, "invalid_json").nonce is None


# --- invalid_message: the frame itself --------------------------------------------------------


@pytest.mark.parametrize("value", [[], [1, 2], "typing", 1, 1.5, True, None])
def test_not_an_object(value: Any) -> None:
    assert refused(value).detail == "frame must be a JSON object"


@pytest.mark.parametrize("kind", ["Message", "", "ping", 1, True, None, [MARKER], {"x": MARKER}])
def test_unknown_type(kind: Any) -> None:
    error = refused({"type": kind, "body": "hi", "nonce": "n-1"})
    assert error.detail == "type must be 'message', 'typing', 'edit', 'delete' or 'react'"
    assert error.nonce == "n-1"


def test_missing_type() -> None:
    assert refused({"body": "hi", "nonce": "n-1"}) == FrameError(
        "invalid_message", "type is missing", "n-1"
    )


# --- invalid_message: the fields --------------------------------------------------------------

FIELDS = [(kind, name) for kind, frame in VALID.items() for name in frame if name != "type"]


@pytest.mark.parametrize(("kind", "field"), FIELDS)
def test_missing_field(kind: str, field: str) -> None:
    frame = {k: v for k, v in VALID[kind].items() if k != field}
    if field == "nonce":
        parsed(frame)  # The one optional field.
    else:
        assert refused(frame).detail == f"{field} is missing"


@pytest.mark.parametrize(
    ("kind", "field", "value"),
    [(kind, name, value) for kind, name in FIELDS for value in WRONG_TYPES[name]],
)
def test_wrong_type(kind: str, field: str, value: Any) -> None:
    """No coercion: "7" is no id, true is no id, 1 is no bool, 7 is no string."""
    error = refused({**VALID[kind], field: value})
    assert error.detail.startswith(f"{field} must be "), error.detail


@pytest.mark.parametrize("message_id", [0, -1, MESSAGE_ID_MAX + 1, 2**64 - 1, 2**64, 10**30])
def test_id_out_of_range(message_id: int) -> None:
    error = refused_text(f'{{"type": "delete", "id": {message_id}}}')
    assert error.detail == "id must be a message id (an integer from 1 to 2^63-1)"


@pytest.mark.parametrize("body", ["", " ", "\n\t \u3000\x1c"])
def test_empty_body(body: str) -> None:
    assert refused(message(body, nonce="n-1")) == FrameError(
        "invalid_message", "body is empty", "n-1"
    )


@pytest.mark.parametrize("kind", ["message", "edit"])
def test_nul_in_body(kind: str) -> None:
    error = refused({**VALID[kind], "body": "a\x00b"})
    assert error.detail == "body must not contain NUL characters"


@pytest.mark.parametrize("nonce", ["", "n" * (NONCE_MAX_CHARS + 1), "a\x00b"])
def test_bad_nonce_is_refused_and_not_echoed(nonce: str) -> None:
    assert refused(message("hi", nonce=nonce)) == FrameError(
        "invalid_message", "nonce must be a string of 1-64 characters without NUL", None
    )


# --- too_large --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["message", "edit"])
def test_body_over_4000_characters(kind: str) -> None:
    error = refused({**VALID[kind], "body": "x" * (BODY_MAX_CHARS + 1)}, "too_large")
    assert error.detail == "body is over 4000 characters"


def test_too_large_wins_over_other_faults() -> None:
    """A body too long is reported as such even with a bad nonce or a NUL in it."""
    long_body = "\x00" + "x" * BODY_MAX_CHARS
    assert refused(message(long_body, nonce=""), "too_large").nonce is None


# --- The nonce in errors ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (message(""), "invalid_message"),
        (message("a\x00"), "invalid_message"),
        (message(7), "invalid_message"),
        ({"type": "message"}, "invalid_message"),
        (message("x" * (BODY_MAX_CHARS + 1)), "too_large"),
        ({"type": "edit", "id": "7", "body": "x"}, "invalid_message"),
        ({"type": "nonsense"}, "invalid_message"),
    ],
)
def test_error_repeats_a_valid_nonce(frame: dict[str, Any], code: str) -> None:
    """The client learns which of its messages was refused."""
    nonce = "n" * NONCE_MAX_CHARS
    assert refused({**frame, "nonce": nonce}, code).nonce == nonce
    assert refused(frame, code).nonce is None


# --- Emoji ------------------------------------------------------------------------------------

EMOJI_ACCEPTED = {
    "simple": "👍",
    "skin tone": "👍🏽",
    "variation selector": "❤️",
    "zero-width joiner sequence": "👩‍💻",
    "flag": "🇫🇷",
    "16 bytes": "😀😀😀😀",
    "short name": ":+1:",
    "short name with underscore and dash": ":thumbs_up-2:",
    "short name of 32 characters": ":" + "a" * 30 + ":",
}
EMOJI_REFUSED = {
    "empty": "",
    "ASCII letter": "a",
    "ASCII with an emoji": "a👍",
    "over 16 bytes": "😀😀😀😀\u0301",
    "long joiner sequence": "👨‍👩‍👧‍👦",
    "short name of 33 characters": ":" + "a" * 31 + ":",
    "empty short name": "::",
    "unclosed short name": ":smile",
    "capitals in a short name": ":Smile:",
    "space in a short name": ":thumbs up:",
    "leading space": " 👍",
    "trailing newline": "👍\n",
    "no-break space": "\xa0",
    "zero-width space": "\u200b",
    "direction override": "\u202e👍",
    "BOM after an emoji": "👍\ufeff",
    "joiner first": "\u200d👍",
    "combining mark first": "\u0301",
    "control character": "👍\x9f",
}


@pytest.mark.parametrize("emoji", EMOJI_ACCEPTED.values(), ids=EMOJI_ACCEPTED)
def test_emoji_accepted(emoji: str) -> None:
    frame = parsed({"type": "react", "id": 1, "emoji": emoji, "on": True})
    assert isinstance(frame, ReactFrame)
    assert frame.emoji == emoji


@pytest.mark.parametrize("emoji", EMOJI_REFUSED.values(), ids=EMOJI_REFUSED)
def test_emoji_refused(emoji: str) -> None:
    error = refused({"type": "react", "id": 1, "emoji": emoji, "on": True})
    assert error.detail == "emoji must be one emoji of at most 16 bytes, or a :short_name:"


# --- Hostile nesting --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["array", "object"])
def test_nesting_at_the_parser_limit_is_json(kind: str) -> None:
    """1024 levels parse; the frame is then refused for what it is, not for its depth."""
    raw = "[" * 1024 + "]" * 1024 if kind == "array" else '{"a":' * 1023 + "0" + "}" * 1023
    expected = "frame must be a JSON object" if kind == "array" else "type is missing"
    assert refused_text(raw).detail == expected


@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize(("kind", "field"), [("message", "type"), *FIELDS])
def test_deeply_nested_field(kind: str, field: str) -> None:
    """A value nested 1000 deep in any field is refused in a sentence, without recursing
    through it (a RecursionError, even one only printed, would be a fault)."""
    deep = "[" * 1000 + "]" * 1000
    frame = text({**VALID[kind], field: MARKER}).replace(f'"{MARKER}"', deep)
    error = refused_text(frame)
    assert error.detail.startswith(f"{field} must be "), error.detail


# --- One rule for every door ------------------------------------------------------------------


def test_rest_and_socket_share_body_and_nonce() -> None:
    """The REST body and the frames are built from the same field types, not copies."""
    hints = typing.get_type_hints(schemas.MessageIn, include_extras=True)
    for model in (MessageFrame, EditFrame):
        assert typing.get_type_hints(model, include_extras=True)["body"] is fields.Body
    assert hints["body"] is fields.Body
    frame_nonce = typing.get_type_hints(MessageFrame, include_extras=True)["nonce"]
    assert typing.get_args(hints["nonce"])[0] is typing.get_args(frame_nonce)[0] is fields.Nonce


@pytest.mark.parametrize(
    "body",
    ["\x1c hi \x1f", "x" * BODY_MAX_CHARS, "x" * (BODY_MAX_CHARS + 1), " ", "a\x00", "a\ud800"],
)
def test_rest_and_socket_agree_on_bodies(body: str) -> None:
    """What the REST API stores, the socket stores; what one refuses, the other refuses (a
    lone surrogate reaches the REST schema from Python's JSON parser, and must stop there)."""
    result = parse_frame(text(message(body)))
    try:
        rest = schemas.MessageIn.model_validate({"body": body}).body
    except ValueError:
        assert isinstance(result, FrameError)
    else:
        assert isinstance(result, MessageFrame)
        assert result.body == rest
