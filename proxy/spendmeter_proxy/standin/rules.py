"""Scripted behaviour: rules that pick requests and say how to answer them, in turn.

A `Rule` matches requests (host, method, path regex, requested model, stream flag) and holds a sequence
of `Reply`s served one per matching request: e.g. a 429 with ``Retry-After: 0`` and then the normal
answer, so an SDK's retry can be shown. When the sequence is used up the rule stops matching (or keeps
serving its last reply with ``repeat_last``). A `Fault` breaks an answer on purpose: a long pause before
the first byte, a connection reset after some bytes, or a stream cut short. `parse_rules` reads rules
from a YAML/JSON document for the command line.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from spendmeter_proxy.standin.messages import Headers, Request

CONTENT_CODINGS = ("gzip", "br", "zstd", "deflate")


@dataclass(frozen=True, slots=True)
class Fault:
    """A deliberate failure while sending an answer."""

    first_byte_delay_s: float = 0.0
    reset_after_bytes: int | None = None  # send this many body bytes, then reset the connection (TCP RST)
    drop_last_events: int = 0  # leave out the last N stream events ...
    end_cleanly: bool = False  # ... and then end the message properly (default: close mid-message)


@dataclass(frozen=True, slots=True)
class Reply:
    """One scripted answer. With no ``status`` it is the normal answer (replay or synthetic)."""

    status: int | None = None
    message: str = ""  # error message, sent in the provider's error shape when status >= 400
    headers: Headers = ()  # added to the answer, e.g. (("retry-after", "0"),)
    sample: str | None = None  # replay this recorded exchange whatever the request
    cached_tokens: int | None = None  # synthetic answers: report this many cached input tokens
    compress: str | None = None  # content-coding to use when the client accepts it
    chunk_delay_s: float | None = None  # pause between stream events (default: the server's)
    fault: Fault | None = None

    @classmethod
    def error(cls, status: int, message: str = "", retry_after: float | None = None) -> Reply:
        headers: Headers = (("retry-after", f"{retry_after:g}"),) if retry_after is not None else ()
        return cls(status=status, message=message or f"stand-in error {status}", headers=headers)


@dataclass(slots=True, eq=False)
class Rule:
    """Requests to script and the replies they get, in turn."""

    replies: Sequence[Reply]
    host: str | None = None
    method: str | None = None
    path: str | None = None  # regular expression searched in the path (query included)
    model: str | None = None
    stream: bool | None = None
    repeat_last: bool = False
    served: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        if not self.replies:
            raise ValueError("a rule needs at least one reply")
        if self.path is not None:
            re.compile(self.path)

    def matches(self, request: Request) -> bool:
        return (
            (self.host is None or self.host.lower() == request.host)
            and (self.method is None or self.method.upper() == request.method)
            and (self.path is None or re.search(self.path, request.path) is not None)
            and (self.model is None or self.model == request.model)
            and (self.stream is None or self.stream == request.stream)
        )

    def take(self, request: Request) -> Reply | None:
        """The reply for ``request`` if this rule matches it and has one left (thread-safe)."""
        if not self.matches(request):
            return None
        with self._lock:
            if self.served >= len(self.replies) and not self.repeat_last:
                return None
            reply = self.replies[min(self.served, len(self.replies) - 1)]
            self.served += 1
            return reply


def _keys(doc: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = set(doc) - allowed
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)} (allowed: {sorted(allowed)})")


def _ms(doc: Mapping[str, Any], key: str, where: str) -> float | None:
    value = doc.get(key)
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{where}: {key} must be a non-negative number, got {value!r}")
    return float(value) / 1000


def parse_fault(doc: Mapping[str, Any], where: str = "fault") -> Fault:
    _keys(doc, {"first_byte_delay_ms", "reset_after_bytes", "drop_last_events", "end_cleanly"}, where)
    reset = doc.get("reset_after_bytes")
    drop = doc.get("drop_last_events", 0)
    if reset is not None and (not isinstance(reset, int) or reset < 0):
        raise ValueError(f"{where}: reset_after_bytes must be a non-negative integer, got {reset!r}")
    if not isinstance(drop, int) or drop < 0:
        raise ValueError(f"{where}: drop_last_events must be a non-negative integer, got {drop!r}")
    return Fault(
        first_byte_delay_s=_ms(doc, "first_byte_delay_ms", where) or 0.0,
        reset_after_bytes=reset,
        drop_last_events=drop,
        end_cleanly=bool(doc.get("end_cleanly", False)),
    )


def parse_reply(doc: Mapping[str, Any], where: str = "reply") -> Reply:
    allowed = {
        "status",
        "message",
        "headers",
        "sample",
        "cached_tokens",
        "compress",
        "chunk_delay_ms",
        "fault",
    }
    _keys(doc, allowed, where)
    status = doc.get("status")
    if status is not None and (not isinstance(status, int) or not 100 <= status <= 599):
        raise ValueError(f"{where}: status must be an HTTP status code, got {status!r}")
    headers = doc.get("headers") or {}
    if not isinstance(headers, Mapping):
        raise ValueError(f"{where}: headers must be a mapping")
    compress = doc.get("compress")
    if compress is not None and compress not in CONTENT_CODINGS:
        raise ValueError(f"{where}: compress must be one of {CONTENT_CODINGS}, got {compress!r}")
    fault = doc.get("fault")
    if fault is not None and not isinstance(fault, Mapping):
        raise ValueError(f"{where}: fault must be a mapping")
    cached = doc.get("cached_tokens")
    if cached is not None and (not isinstance(cached, int) or cached < 0):
        raise ValueError(f"{where}: cached_tokens must be a non-negative integer, got {cached!r}")
    sample = doc.get("sample")
    if sample is not None and not isinstance(sample, str):
        raise ValueError(f"{where}: sample must be a sample id, got {sample!r}")
    message = str(doc.get("message") or "")
    return Reply(
        status=status,
        message=message or (f"stand-in error {status}" if status and status >= 400 else ""),
        headers=tuple((str(k).lower(), str(v)) for k, v in headers.items()),
        sample=sample,
        cached_tokens=cached,
        compress=compress,
        chunk_delay_s=_ms(doc, "chunk_delay_ms", where),
        fault=parse_fault(fault, f"{where}.fault") if fault is not None else None,
    )


def parse_rules(doc: object) -> list[Rule]:
    """Rules from a list of mappings (``host``, ``method``, ``path``, ``model``, ``stream``,
    ``repeat_last``, ``replies``: [{``status``, ``message``, ``headers``, ``sample``, ``cached_tokens``,
    ``compress``, ``chunk_delay_ms``, ``fault``: {...}}])."""
    if not isinstance(doc, list):
        raise ValueError("rules must be a list")
    rules = []
    for i, item in enumerate(doc):
        where = f"rule {i}"
        if not isinstance(item, Mapping):
            raise ValueError(f"{where}: must be a mapping")
        _keys(item, {"host", "method", "path", "model", "stream", "repeat_last", "replies"}, where)
        replies = item.get("replies")
        if not isinstance(replies, list) or not replies:
            raise ValueError(f"{where}: replies must be a non-empty list")
        try:
            rules.append(
                Rule(
                    replies=[parse_reply(r, f"{where}.replies[{j}]") for j, r in enumerate(replies)],
                    host=item.get("host"),
                    method=item.get("method"),
                    path=item.get("path"),
                    model=item.get("model"),
                    stream=item.get("stream"),
                    repeat_last=bool(item.get("repeat_last", False)),
                )
            )
        except re.error as e:
            raise ValueError(f"{where}: path is not a regular expression: {e}") from e
    return rules
