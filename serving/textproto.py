"""A reader for the small text-proto config files whose protos the pip package does not ship.

`tensorflow-serving-api` carries ModelServerConfig but not BatchingParameters, MonitoringConfig
or SSLConfig; the model server's own flags point at files in those formats, so we read them
into nested dicts with protobuf's own tokenizer (which handles quoting and escapes).
"""
from __future__ import annotations

from typing import Any

from google.protobuf import text_format


class TextProtoError(ValueError):
    pass


def parse(text: str) -> dict[str, Any]:
    """Fields into a dict; a repeated field becomes a list, a sub-message a dict."""
    tokenizer = text_format.Tokenizer(text.splitlines())
    message = _message(tokenizer, closing=None)
    return message


def _message(tokenizer: text_format.Tokenizer, closing: str | None) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    while True:
        if closing is None and tokenizer.AtEnd():
            return fields
        if closing is not None and tokenizer.TryConsume(closing):
            return fields
        if tokenizer.AtEnd():
            raise TextProtoError(f"missing '{closing}'")
        name = tokenizer.ConsumeIdentifier()
        if tokenizer.TryConsume(":"):
            if tokenizer.TryConsume("{"):
                value: Any = _message(tokenizer, "}")
            elif tokenizer.TryConsume("<"):
                value = _message(tokenizer, ">")
            else:
                value = _scalar(tokenizer)
        elif tokenizer.TryConsume("{"):
            value = _message(tokenizer, "}")
        elif tokenizer.TryConsume("<"):
            value = _message(tokenizer, ">")
        else:
            raise TextProtoError(f"line {tokenizer._line + 1}: expected ':' or '{{' after {name}")
        tokenizer.TryConsume(",") or tokenizer.TryConsume(";")
        if name in fields:
            previous = fields[name]
            fields[name] = (previous if isinstance(previous, list) else [previous]) + [value]
        else:
            fields[name] = value


def _scalar(tokenizer: text_format.Tokenizer) -> Any:
    token = tokenizer.token
    if token.startswith(("'", '"')):
        return tokenizer.ConsumeString()
    if token in ("true", "True", "false", "False"):
        return tokenizer.ConsumeBool()
    try:
        return tokenizer.ConsumeInteger()
    except text_format.ParseError:
        pass
    try:
        return tokenizer.ConsumeFloat()
    except text_format.ParseError:
        return tokenizer.ConsumeIdentifier()  # an enum value
