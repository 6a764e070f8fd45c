"""Recorded provider exchanges: one HTTP request and the provider's answer, as stored in the sample corpus.

The corpus (``provider-samples/<provider>__<case>.json``, schema in its README) is what the stand-in
replays and what the parser tests read. `parse_exchange` turns one JSON document into an `Exchange`
(pure, raising ValueError on a malformed document); `load_exchanges` reads a whole directory.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Headers = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Exchange:
    """One recorded request and response, with the hand-read expectations of the corpus."""

    id: str
    provider: str
    method: str
    host: str
    path: str | None
    request_headers: Headers
    request_body: bytes | None
    requested_model: str | None
    stream: bool
    is_error: bool
    status: int
    response_headers: Headers
    response_body: bytes
    expected: Mapping[str, Any] = field(default_factory=dict)
    source_kind: str = ""

    @property
    def route(self) -> str | None:
        """The path without its query string."""
        return None if self.path is None else self.path.split("?", 1)[0]

    def response_header(self, name: str) -> str | None:
        name = name.lower()
        return next((v for k, v in self.response_headers if k.lower() == name), None)


def _str(doc: Mapping[str, Any], key: str, where: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str) or not value:
        raise ValueError(f"{where}: '{key}' must be a non-empty string, got {value!r}")
    return value


def _headers(value: object, where: str) -> Headers:
    if value is None:
        return ()
    if not isinstance(value, Mapping):
        raise ValueError(f"{where}: headers must be an object, got {type(value).__name__}")
    return tuple((str(k), str(v)) for k, v in value.items())


def parse_exchange(doc: Mapping[str, Any]) -> Exchange:
    """An `Exchange` from one sample document; ValueError names what is missing or malformed."""
    sample_id = _str(doc, "id", "sample")
    where = f"sample {sample_id}"
    request, response = doc.get("request"), doc.get("response")
    if not isinstance(request, Mapping) or not isinstance(response, Mapping):
        raise ValueError(f"{where}: 'request' and 'response' must be objects")
    expected = doc.get("expected") or {}
    if not isinstance(expected, Mapping):
        raise ValueError(f"{where}: 'expected' must be an object")
    status = response.get("status")
    if not isinstance(status, int) or not 100 <= status <= 599:
        raise ValueError(f"{where}: response status must be an HTTP status code, got {status!r}")
    body = response.get("body")
    if not isinstance(body, str):
        raise ValueError(f"{where}: response body must be a string")
    encoding = response.get("body_encoding")
    if encoding == "base64":
        response_body = base64.b64decode(body, validate=True)
    elif encoding is None:
        response_body = body.encode()
    else:
        raise ValueError(f"{where}: unknown body_encoding {encoding!r}")
    path = request.get("path")
    if path is not None and (not isinstance(path, str) or not path.startswith("/")):
        raise ValueError(f"{where}: request path must start with '/', got {path!r}")
    request_body = request.get("body")
    requested_model = expected.get("requested_model")
    return Exchange(
        id=sample_id,
        provider=str(expected.get("provider") or sample_id.split("__", 1)[0]),
        method=_str(request, "method", where).upper(),
        host=_str(request, "host", where).lower(),
        path=path or None,
        request_headers=_headers(request.get("headers"), where),
        request_body=request_body.encode() if isinstance(request_body, str) and request_body else None,
        requested_model=requested_model if isinstance(requested_model, str) and requested_model else None,
        stream=bool(expected.get("streaming")),
        is_error=bool(expected.get("is_error")) or status >= 400,
        status=status,
        response_headers=_headers(response.get("headers"), where),
        response_body=response_body,
        expected=expected,
        source_kind=str(doc.get("source_kind") or ""),
    )


def load_exchanges(directory: Path) -> list[Exchange]:
    """Every sample in ``directory`` (files named ``<provider>__<case>.json``), sorted by id."""
    paths = sorted(directory.glob("*__*.json"))
    if not paths:
        raise ValueError(f"{directory}: no samples (<provider>__<case>.json) found")
    exchanges = []
    for path in paths:
        try:
            exchanges.append(parse_exchange(json.loads(path.read_bytes())))
        except (ValueError, UnicodeDecodeError) as e:
            raise ValueError(f"{path.name}: {e}") from e
    return exchanges
