"""Error responses in each provider's own shape (see the corpus README, "Error shapes").

The proxy answers in these shapes when a budget blocks a call, so that the app's SDK raises the same
rate-limit error it would raise for the provider itself; the provider stand-in uses them too.
Families: ``openai`` (every OpenAI-compatible API), ``anthropic``, ``google`` (Gemini and Vertex),
``bedrock``, ``openrouter`` and ``cohere``.
"""

from __future__ import annotations

import hashlib

import orjson

FAMILIES = ("openai", "anthropic", "google", "bedrock", "openrouter", "cohere")

_OPENAI_ERRORS = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "unsupported_country_region_territory"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
    500: ("server_error", None),
    503: ("server_error", None),
}
_ANTHROPIC_ERRORS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
_GOOGLE_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_BEDROCK_ERRORS = {
    400: "ValidationException",
    403: "AccessDeniedException",
    404: "ResourceNotFoundException",
    429: "ThrottlingException",
    500: "InternalServerException",
    503: "ServiceUnavailableException",
}
_BY_API = {"anthropic_messages": "anthropic", "gemini_generate": "google", "cohere_chat": "cohere"}


def family_of(provider: str, api: str) -> str:
    """The error family of a call: by provider where it has its own shape, else by wire API."""
    if provider == "openrouter":
        return "openrouter"
    if provider == "aws.bedrock" or api.startswith("bedrock_"):
        return "bedrock"
    return _BY_API.get(api, "openai")


def error_body(family: str, status: int, message: str) -> tuple[bytes, list[tuple[str, str]]]:
    """The JSON body and the extra headers of an error answer in ``family``'s shape."""
    extra: list[tuple[str, str]] = []
    body: object
    if family == "anthropic":
        kind = _ANTHROPIC_ERRORS.get(status, "api_error" if status >= 500 else "invalid_request_error")
        digest = hashlib.sha256(message.encode()).hexdigest()[:24]
        body = {"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_" + digest}
    elif family == "google":
        reason = _GOOGLE_STATUS.get(status, "INTERNAL" if status >= 500 else "FAILED_PRECONDITION")
        body = {"error": {"code": status, "message": message, "status": reason}}
    elif family == "bedrock":
        kind = _BEDROCK_ERRORS.get(
            status, "InternalServerException" if status >= 500 else "ValidationException"
        )
        body = {"message": message}
        extra.append(("x-amzn-errortype", f"{kind}:http://internal.amazon.com/coral/com.amazon.bedrock/"))
    elif family == "openrouter":
        body = {"error": {"code": status, "message": message, "metadata": {"provider_name": "spendmeter"}}}
    elif family == "cohere":
        body = {"id": hashlib.sha256(message.encode()).hexdigest()[:32], "message": message}
    else:
        kind, code = _OPENAI_ERRORS.get(
            status, ("server_error" if status >= 500 else "invalid_request_error", None)
        )
        body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return orjson.dumps(body), extra
