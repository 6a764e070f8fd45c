"""What reaches the stand-in and what it sends back, as plain data.

`Request` is an HTTP request with the facts the stand-in selects an answer by (host, route, requested
model, stream flag, whether OpenAI-style usage was asked for); `parse_request` derives them from the raw
parts without any I/O. `Answer` is a response ready to be sent: status, headers without framing headers,
and the body as a list of pieces (stream events, or one piece for a plain body). `Received` is the
log record of one request: selected headers and a hash of the body, never the body or a credential.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import orjson

Headers = tuple[tuple[str, str], ...]

_PATH_MODEL = (
    re.compile(r"/models/([^/:?]+):"),  # Gemini and Vertex: .../models/{model}:generateContent
    re.compile(r"^/model/([^/?]+)/"),  # Bedrock: /model/{id}/converse
    re.compile(r"/deployments/([^/?]+)/"),  # Azure OpenAI classic: /openai/deployments/{name}/...
)
_STREAMING_ROUTES = (":streamGenerateContent", "/converse-stream", "/invoke-with-response-stream")


@dataclass(frozen=True, slots=True)
class Request:
    """One request as the stand-in sees it (the body is kept only to answer it, never logged)."""

    method: str
    host: str
    path: str
    headers: Headers
    body: bytes
    json: Mapping[str, Any] | None
    model: str | None
    stream: bool
    include_usage: bool

    @property
    def route(self) -> str:
        """The path without its query string."""
        return self.path.split("?", 1)[0]

    def header(self, name: str) -> str | None:
        name = name.lower()
        return next((v for k, v in self.headers if k == name), None)


def _host_of(headers: Headers) -> str:
    host = next((v for k, v in headers if k == "host"), "")
    if host.startswith("["):  # [::1]:8443
        return host[1 : host.find("]")].lower() if "]" in host else host.lower()
    return host.rsplit(":", 1)[0].lower() if host.count(":") == 1 else host.lower()


def model_from_path(path: str) -> str | None:
    """The model a URL names (Gemini/Vertex ``models/{m}:``, Bedrock ``/model/{id}/``, Azure deployments)."""
    route = path.split("?", 1)[0]
    for pattern in _PATH_MODEL:
        if m := pattern.search(route):
            return unquote(m.group(1))
    return None


def parse_request(method: str, path: str, headers: Headers, body: bytes) -> Request:
    """A `Request` from raw parts; header names must already be lower-case."""
    doc: Mapping[str, Any] | None = None
    if body[:1] in (b"{", b" ", b"\n", b"\t", b"\r"):
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            parsed = None
        doc = parsed if isinstance(parsed, Mapping) else None
    model = doc.get("model") if doc is not None else None
    stream_options = doc.get("stream_options") if doc is not None else None
    route = path.split("?", 1)[0]
    return Request(
        method=method.upper(),
        host=_host_of(headers),
        path=path,
        headers=headers,
        body=body,
        json=doc,
        model=model if isinstance(model, str) else model_from_path(path),
        stream=(doc is not None and doc.get("stream") is True) or any(r in route for r in _STREAMING_ROUTES),
        include_usage=isinstance(stream_options, Mapping) and stream_options.get("include_usage") is True,
    )


@dataclass(frozen=True, slots=True)
class Answer:
    """A response to send: ``pieces`` go out one by one (with a pause between them) when ``stream``."""

    status: int
    headers: Headers
    pieces: tuple[bytes, ...]
    stream: bool = False
    source: str = "synthetic"

    @property
    def body(self) -> bytes:
        return b"".join(self.pieces)


LOGGED_HEADERS = frozenset({"content-type", "content-length", "accept", "accept-encoding", "user-agent"})
LOGGED_HEADER_PREFIXES = ("x-stainless-", "anthropic-", "openai-", "amz-sdk-", "x-spendmeter-")


@dataclass(frozen=True, slots=True)
class Received:
    """What the stand-in logs about one request: never the body (only its hash) and never credentials."""

    time: float
    method: str
    host: str
    path: str
    headers: Mapping[str, str]
    body_sha256: str
    body_size: int
    model: str | None
    stream: bool
    include_usage: bool
    status: int
    source: str

    @classmethod
    def of(cls, request: Request, answer: Answer, time: float) -> Received:
        kept = {
            k: v
            for k, v in request.headers
            if k in LOGGED_HEADERS
            or (k.startswith(LOGGED_HEADER_PREFIXES) and "key" not in k and "auth" not in k)
        }
        return cls(
            time=time,
            method=request.method,
            host=request.host,
            path=request.path,
            headers=kept,
            body_sha256=hashlib.sha256(request.body).hexdigest(),
            body_size=len(request.body),
            model=request.model,
            stream=request.stream,
            include_usage=request.include_usage,
            status=answer.status,
            source=answer.source,
        )
