"""Building mitmproxy test flows for the addon's tests (mitmproxy's own `tflow`/`tutils`, no mocks)."""

from __future__ import annotations

import orjson
from mitmproxy import http
from mitmproxy.test import tflow, tutils


def make_flow(
    body: object,
    host: str = "api.openai.com",
    path: str = "/v1/chat/completions",
    headers: dict[str, str] | None = None,
) -> http.HTTPFlow:
    req = tutils.treq(
        host=host,
        port=443,
        scheme=b"https",
        path=path.encode(),
        method=b"POST",
        content=orjson.dumps(body) if not isinstance(body, bytes) else body,
    )
    req.headers["host"] = host
    req.headers["content-type"] = "application/json"
    for k, v in (headers or {}).items():
        req.headers[k] = v
    f = tflow.tflow(req=req)
    f.client_conn.sni = host  # what a TLS client sends for this host
    return f


def respond(
    f: http.HTTPFlow,
    status: int,
    body: bytes,
    content_type: str = "application/json",
    headers: dict[str, str] | None = None,
) -> None:
    f.response = tutils.tresp(status_code=status, content=b"")
    f.response.headers.clear()
    f.response.headers["content-type"] = content_type
    for k, v in (headers or {}).items():
        f.response.headers[k] = v
    f.response.raw_content = body


def pump(f: http.HTTPFlow, body: bytes, size: int) -> bytes:
    """Feeds a body to the response's stream tap in pieces, as mitmproxy would; returns what the client gets."""
    assert f.response is not None and callable(f.response.stream)
    out = b""
    for piece in [body[i : i + size] for i in range(0, len(body), size)] + [b""]:
        chunks = f.response.stream(piece)
        out += chunks if isinstance(chunks, bytes) else b"".join(chunks)
    return out
