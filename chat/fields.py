"""What clients may send, each rule defined once.

The pydantic types serve the REST bodies (chat/schemas.py) and the WebSocket frames
(chat/frames.py); the `is_valid_*` checks and the `*_RULE` texts serve the pages, the command
line and error messages, so that every door refuses the same input with the same words.
"""

import re
import unicodedata
from functools import cache
from importlib.resources import files
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
)
from pydantic_core import PydanticCustomError

USERNAME_MIN_CHARS = 3
USERNAME_MAX_CHARS = 32
# Also the register form's `pattern`: a browser reads it as the same JavaScript regex.
USERNAME_PATTERN = rf"^[A-Za-z0-9_.\-]{{{USERNAME_MIN_CHARS},{USERNAME_MAX_CHARS}}}$"
USERNAME_RULE = f"{USERNAME_MIN_CHARS}-{USERNAME_MAX_CHARS} letters, digits, '_', '.' or '-'"
# What a search for usernames may hold: a piece of a username, so never a NUL or a wildcard
# that the database would see.
USERNAME_SEARCH_PATTERN = rf"^[A-Za-z0-9_.\-]{{0,{USERNAME_MAX_CHARS}}}$"

PASSWORD_MIN_CHARS = 8
PASSWORD_MAX_CHARS = 1024
PASSWORD_RULE = f"{PASSWORD_MIN_CHARS}-{PASSWORD_MAX_CHARS} characters"
COMMON_PASSWORD_RULE = "Passwords must not be one of the most common passwords."
USERNAME_PASSWORD_RULE = "Passwords must not be the username."
# What a sign-in refuses before it counts or hashes anything: no account has a longer name
# or password, and neither should cost memory in the throttle or time in the hasher.
SIGN_IN_RULE = (
    f"usernames have at most {USERNAME_MAX_CHARS} characters"
    f" and passwords at most {PASSWORD_MAX_CHARS}"
)

# Invites: codes of 16 random bytes in URL-safe base64 (22 characters), and what an admin
# may ask of one.
INVITE_CODE_MAX_CHARS = 64
_INVITE_CODE_RE = re.compile(rf"[A-Za-z0-9_\-]{{1,{INVITE_CODE_MAX_CHARS}}}")
INVITE_USES_MAX = 1000
INVITE_USES_DEFAULT = 1
INVITE_HOURS_MAX = 720
INVITE_HOURS_DEFAULT = 168

ROOM_NAME_MAX_CHARS = 64
ROOM_NAME_PATTERN = rf"^[a-z0-9\-]{{1,{ROOM_NAME_MAX_CHARS}}}$"
ROOM_NAME_RULE = f"1-{ROOM_NAME_MAX_CHARS} lowercase letters, digits or '-'"
# Direct conversations are named by the server; no one else may take such a name.
DM_NAME_PREFIX = "dm-"
RESERVED_ROOM_NAME_RULE = f"names starting with '{DM_NAME_PREFIX}' are kept for direct messages"
TOPIC_MAX_CHARS = 250
TOPIC_RULE = f"at most {TOPIC_MAX_CHARS} characters, without NUL"
# A direct conversation: the caller and 1-8 others.
DM_OTHERS_MIN = 1
DM_OTHERS_MAX = 8

BODY_MAX_CHARS = 4000
BODY_RULE = f"1-{BODY_MAX_CHARS} characters after trimming, without NUL"
NONCE_MAX_CHARS = 64
NONCE_RULE = f"a string of 1-{NONCE_MAX_CHARS} characters without NUL"
# Message ids are 64-bit signed integers in every database the server runs on.
MESSAGE_ID_MAX = 2**63 - 1
MESSAGE_ID_RULE = "a message id (an integer from 1 to 2^63-1)"
# A socket's `?since=`: ASCII digits only (str.isdigit also takes "²", which int() refuses).
_SINCE_RE = re.compile(r"[0-9]{1,19}")
EMOJI_MAX_BYTES = 16
EMOJI_RULE = f"one emoji of at most {EMOJI_MAX_BYTES} bytes, or a :short_name:"

# No NUL characters: PostgreSQL cannot store them in text.
_NO_NUL_PATTERN = r"^[^\x00]*$"
# At most 32 characters with the colons, as the spec allows.
_SHORT_NAME_RE = re.compile(r":[a-z0-9_+\-]{1,30}:")
# Format characters that emoji sequences are made with: the zero-width joiner (👩‍💻) and the
# tag characters of subdivision flags. Other format characters (direction overrides, zero-width
# spaces, the BOM) only hide or reorder text.
_EMOJI_JOINERS = frozenset(["\u200d", *map(chr, range(0xE0020, 0xE0080))])


def _trimmed_body(value: str) -> str:
    try:
        # A lone surrogate (JSON's "\ud800", which Python's parser lets through) is not text:
        # no database driver could encode it.
        value.encode()
    except UnicodeEncodeError:
        raise PydanticCustomError("string_unicode", "Input should be a valid string") from None
    # Python's strip, not pydantic's: it also trims the separators U+001C-U+001F, as the
    # WebSocket always has, so that both doors store the same body.
    body = value.strip()
    if not body:
        raise PydanticCustomError("body_empty", "String is empty after trimming")
    if len(body) > BODY_MAX_CHARS:
        raise PydanticCustomError(
            "body_too_long",
            "String should have at most {max_length} characters after trimming",
            {"max_length": BODY_MAX_CHARS},
        )
    if "\x00" in body:
        raise PydanticCustomError("body_nul", "String should not contain NUL characters")
    return body


def is_valid_emoji(value: str) -> bool:
    """A `:short_name:`, or something that looks like one emoji.

    The spec's rule is one grapheme of at most 16 UTF-8 bytes. Telling graphemes apart needs
    Unicode's segmentation tables, which the standard library lacks, so this approximates: at
    most 16 bytes of non-ASCII characters that are neither whitespace nor control characters,
    with no format characters but those emoji sequences use, starting with neither a
    combining mark nor a joiner. It lets through a few non-emoji (a short run of CJK or
    accented letters) and refuses keycaps such as 1️⃣, which start with an ASCII digit.
    """
    if _SHORT_NAME_RE.fullmatch(value):
        return True
    if not value or len(value.encode(errors="surrogatepass")) > EMOJI_MAX_BYTES:
        return False
    if unicodedata.category(value[0]) in ("Mn", "Mc", "Me", "Cf"):
        return False
    for char in value:
        category = unicodedata.category(char)
        if char.isascii() or char.isspace() or category in ("Cc", "Cs"):
            return False
        if category == "Cf" and char not in _EMOJI_JOINERS:
            return False
    return True


@cache
def _common_passwords() -> frozenset[str]:
    """The most common passwords of public leak lists, lower-cased: the first ones guessed."""
    text = files("chat").joinpath("common_passwords.txt").read_text(encoding="utf-8")
    return frozenset(line for line in text.splitlines() if line)


def is_common_password(password: str) -> bool:
    # Case does not make a listed password any harder to guess.
    return password.lower() in _common_passwords()


def _uncommon(value: str) -> str:
    if is_common_password(value):
        raise PydanticCustomError("password_common", COMMON_PASSWORD_RULE)
    return value


def password_problem(username: str, password: str) -> str | None:
    """Why a new password cannot be had, as a sentence; None when it can. Every door that sets
    a password (the API, the register form, the command line) asks this."""
    if not is_valid_password(password):
        return f"Passwords are {PASSWORD_RULE}."
    if password.lower() == username.lower():
        return USERNAME_PASSWORD_RULE
    if is_common_password(password):
        return COMMON_PASSWORD_RULE
    return None


def _emoji(value: str) -> str:
    if not is_valid_emoji(value):
        raise PydanticCustomError("emoji", "Value should be " + EMOJI_RULE)
    return value


Username = Annotated[str, StringConstraints(pattern=USERNAME_PATTERN)]
Password = Annotated[
    str,
    StringConstraints(min_length=PASSWORD_MIN_CHARS, max_length=PASSWORD_MAX_CHARS),
    AfterValidator(_uncommon),
]
RoomName = Annotated[str, StringConstraints(pattern=ROOM_NAME_PATTERN)]
Topic = Annotated[
    str,
    StringConstraints(strip_whitespace=True, max_length=TOPIC_MAX_CHARS, pattern=_NO_NUL_PATTERN),
]
# What a room is: public (listed, open to all), private (members only, invisible to others)
# or dm (a fixed set of people, made with POST /api/dms).
RoomKind = Literal["public", "private", "dm"]
CreatableKind = Literal["public", "private"]
Role = Literal["owner", "moderator", "member"]
Body = Annotated[
    str,
    AfterValidator(_trimmed_body),
    WithJsonSchema(
        {
            "type": "string",
            "minLength": 1,
            "maxLength": BODY_MAX_CHARS,
            "pattern": _NO_NUL_PATTERN,
            "description": BODY_RULE,
        }
    ),
]
Nonce = Annotated[
    str, StringConstraints(min_length=1, max_length=NONCE_MAX_CHARS, pattern=_NO_NUL_PATTERN)
]
MessageId = Annotated[int, Field(ge=1, le=MESSAGE_ID_MAX)]
# Any text: a code that cannot be an invite is refused (403) like an unknown one.
InviteCode = Annotated[str, StringConstraints(max_length=INVITE_CODE_MAX_CHARS)]
InviteUses = Annotated[int, Field(ge=1, le=INVITE_USES_MAX)]
InviteHours = Annotated[int, Field(ge=1, le=INVITE_HOURS_MAX)]
Emoji = Annotated[
    str, AfterValidator(_emoji), WithJsonSchema({"type": "string", "description": EMOJI_RULE})
]


_STRICT = ConfigDict(strict=True)
_USERNAME = TypeAdapter(Username, config=_STRICT)
_PASSWORD = TypeAdapter(
    Annotated[str, StringConstraints(min_length=PASSWORD_MIN_CHARS, max_length=PASSWORD_MAX_CHARS)],
    config=_STRICT,
)
_ROOM_NAME = TypeAdapter(RoomName, config=_STRICT)
_USERNAME_SEARCH = TypeAdapter(
    Annotated[str, StringConstraints(pattern=USERNAME_SEARCH_PATTERN)], config=_STRICT
)
_NONCE = TypeAdapter(Nonce, config=_STRICT)


def _passes(adapter: TypeAdapter[str], value: object) -> bool:
    try:
        adapter.validate_python(value)
    except ValidationError:
        return False
    return True


# Letters that pass for others: Cyrillic and Greek homoglyphs of Latin letters, then the Latin
# letters and digits that common fonts draw alike (I, l, 1, |; O, 0).
_HOMOGLYPHS = str.maketrans(
    "аеорсухіјѕԁһӏԛԝвкмнтɡαβεικνορτυχωзı",
    "aeopcyxijsdhlqwbkmhtgabeiknoptuxw3i",
)
_LOOK_ALIKE = str.maketrans("i1|0", "lllo")


def username_skeleton(username: str) -> str:
    """What a name looks like: equal for names that can pass for each other (`aIice`, `alice`,
    `a1ice`, or `alice` spelt with a Cyrillic a), so that nobody can register a look-alike of
    another's name."""
    folded = unicodedata.normalize("NFKC", username).casefold().translate(_HOMOGLYPHS)
    return folded.replace("rn", "m").replace("vv", "w").translate(_LOOK_ALIKE)


def is_valid_username(value: object) -> bool:
    return _passes(_USERNAME, value)


def is_valid_username_search(value: object) -> bool:
    return _passes(_USERNAME_SEARCH, value)


def is_valid_password(value: object) -> bool:
    return _passes(_PASSWORD, value)


def is_valid_room_name(value: object) -> bool:
    return _passes(_ROOM_NAME, value)


def is_reserved_room_name(name: str) -> bool:
    """Whether only the server may give a room this name (a DM's)."""
    return name.startswith(DM_NAME_PREFIX)


def is_valid_nonce(value: object) -> bool:
    return _passes(_NONCE, value)


def could_be_invite_code(value: str) -> bool:
    """Whether the database need be asked about this code (PostgreSQL refuses a NUL)."""
    return _INVITE_CODE_RE.fullmatch(value) is not None


def parse_since(raw: str) -> int | None:
    """A socket's `?since=` as the message id to resume after (0: from the start), or None
    if it is not one."""
    if not _SINCE_RE.fullmatch(raw):
        return None
    since = int(raw)
    return since if since <= MESSAGE_ID_MAX else None


def is_oversized_sign_in(username: str, password: str) -> bool:
    """Whether a sign-in's name or password is longer than any account's can be."""
    return len(username) > USERNAME_MAX_CHARS or len(password) > PASSWORD_MAX_CHARS
