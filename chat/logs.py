"""Logging for the server, with credentials kept out of every line."""

import logging
import re
from typing import Any
from urllib.parse import unquote_plus

# `name=value` pairs, as in a query string; the name may be percent-encoded.
_PAIR = re.compile(r"((?:[A-Za-z0-9_.~+\-]|%[0-9A-Fa-f]{2})+)=[^&\s\"']*")
# Names whose values are secrets once decoded: `?token=...` (or `?%74oken=...`, which the
# server decodes alike) in a WebSocket URL would otherwise land in access and error logs.
_SECRET_NAME_ENDINGS = ("token", "password")


def _redact_pair(pair: re.Match[str]) -> str:
    name = pair[1]
    if unquote_plus(name).lower().endswith(_SECRET_NAME_ENDINGS):
        return f"{name}=[redacted]"
    return pair[0]


def redact(text: str) -> str:
    return _PAIR.sub(_redact_pair, text)


class RedactSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        return True


class ClientFaultsAsWarnings(logging.Filter):
    """A client's bad bytes are the client's fault, not the server's: uvicorn logs text
    that is not UTF-8 as an error with a traceback, which any client could repeat to
    flood the log. It becomes one warning line (the socket is closed with 1007)."""

    MESSAGES = frozenset({"Invalid UTF-8 sequence received from client."})

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg in self.MESSAGES:
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def log_config(level: str = "INFO") -> dict[str, Any]:
    """uvicorn's logging configuration, every handler passing through the redaction filter."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {
            "redact": {"()": RedactSecrets},
            "client_faults": {"()": ClientFaultsAsWarnings},
        },
        "formatters": {
            "default": {
                "()": "uvicorn.logging.DefaultFormatter",
                "fmt": "%(asctime)s %(levelprefix)s %(name)s: %(message)s",
                "use_colors": False,
            },
            "access": {
                "()": "uvicorn.logging.AccessFormatter",
                "fmt": '%(asctime)s %(levelprefix)s %(client_addr)s - "%(request_line)s" '
                "%(status_code)s",
                "use_colors": False,
            },
        },
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "formatter": "default",
                "filters": ["redact", "client_faults"],
                "stream": "ext://sys.stderr",
            },
            "access": {
                "class": "logging.StreamHandler",
                "formatter": "access",
                "filters": ["redact"],
                "stream": "ext://sys.stdout",
            },
        },
        "loggers": {
            "uvicorn": {"handlers": ["default"], "level": level, "propagate": False},
            "uvicorn.error": {"level": level},
            "uvicorn.access": {"handlers": ["access"], "level": level, "propagate": False},
            "chat": {"handlers": ["default"], "level": level, "propagate": False},
        },
    }
