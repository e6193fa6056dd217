"""Logging for the server, with credentials kept out of every line."""

import logging
import re
from typing import Any
from urllib.parse import unquote_plus

from pythonjsonlogger.json import JsonFormatter as _LibraryJsonFormatter

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


# The fields of every JSON line (and `time`, in ISO 8601 UTC), named as log collectors expect.
_JSON_FIELDS = "%(levelname)s %(name)s %(message)s"
_JSON_NAMES = {"levelname": "level", "name": "logger"}
# What uvicorn's access records carry as their arguments, named.
_ACCESS_FIELDS = ("client_addr", "method", "path", "http_version", "status_code")


class JsonFormatter(_LibraryJsonFormatter):
    """python-json-logger's formatter: one JSON object per line. An access line also
    carries its request's parts as fields; uvicorn's coloured copy of a message is left
    out. The redaction filter has run on the record before it gets here."""

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        super().add_fields(log_data, record, message_dict)
        log_data.pop("color_message", None)
        args = record.args
        if (
            record.name == "uvicorn.access"
            and isinstance(args, tuple)
            and len(args) == len(_ACCESS_FIELDS)
        ):
            log_data.update(zip(_ACCESS_FIELDS, args, strict=True))


def _json_formatter() -> dict[str, Any]:
    return {
        "()": JsonFormatter,
        "fmt": _JSON_FIELDS,
        "rename_fields": _JSON_NAMES,
        "timestamp": "time",
        "json_ensure_ascii": False,
    }


def log_config(level: str = "INFO", log_format: str = "text") -> dict[str, Any]:
    """uvicorn's logging configuration, every handler passing through the redaction filter;
    `log_format` is CHAT_LOG_FORMAT: `text` lines, or `json` objects one per line."""
    config = _text_log_config(level)
    if log_format == "json":
        config["formatters"] = {"default": _json_formatter(), "access": _json_formatter()}
    return config


def _text_log_config(level: str) -> dict[str, Any]:
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
