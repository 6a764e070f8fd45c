"""Which connections go to LLM providers, and which requests on them are LLM calls.

Two questions, both answered here without I/O:

- `HostTable.provider_for` decides, per connection, whether a host is an LLM API at all (only those
  are decrypted; all other TLS passes through untouched), and names the provider with its
  OpenTelemetry ``gen_ai.provider.name`` id. The table holds the built-in public APIs plus the
  user's own entries (`parse_host_spec`: ``HOST[:PORT]=PROVIDER[/DIALECT]``, for self-hosted
  gateways such as vLLM, which speak the OpenAI wire API unless told otherwise).
- `route` decides, per request, which wire API a call uses (so that the right usage parser reads
  the answer), the requested model and whether a stream was asked for. Requests that are not
  LLM calls (``GET /v1/models``, token counting, ...) give None and are just forwarded.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, get_args
from urllib.parse import unquote

import orjson

__all__ = [
    "BUILTIN_RULES",
    "DIALECTS",
    "OPERATIONS",
    "Api",
    "Dialect",
    "HostRule",
    "HostTable",
    "Route",
    "dialect_of",
    "parse_host_spec",
    "route",
]

Api = Literal[
    "openai_chat",
    "openai_responses",
    "openai_embeddings",
    "openai_completions",
    "anthropic_messages",
    "gemini_generate",
    "bedrock_converse",
    "bedrock_invoke",
    "cohere_chat",
]

Dialect = Literal["openai", "anthropic", "gemini", "bedrock", "cohere"]
"""The family of URL layouts a host serves (every dialect also accepts OpenAI-compatible paths)."""

DIALECTS: tuple[Dialect, ...] = get_args(Dialect)

OPERATIONS: dict[Api, str] = {
    "openai_chat": "chat",
    "openai_responses": "responses",
    "openai_embeddings": "embeddings",
    "openai_completions": "text_completion",
    "anthropic_messages": "chat",
    "gemini_generate": "generate_content",
    "bedrock_converse": "chat",
    "bedrock_invoke": "chat",
    "cohere_chat": "chat",
}
"""OpenTelemetry ``gen_ai.operation.name`` of each wire API."""

MAX_BODY_INSPECTED = 32 * 1024 * 1024
"""Request bodies larger than this are not parsed for the model name."""


@dataclass(frozen=True, slots=True)
class HostRule:
    """Hosts matching ``pattern`` (and ``port``, when set) belong to ``provider``.

    In ``pattern`` a leading ``*.`` stands for one or more labels and any other ``*`` for part
    of one label (``*-aiplatform.googleapis.com``).
    """

    pattern: str
    provider: str
    dialect: Dialect = "openai"
    port: int | None = None

    def spec(self) -> str:
        """The rule in the form `parse_host_spec` reads (the dialect only where it is not the default)."""
        host = f"[{self.pattern}]" if ":" in self.pattern else self.pattern
        port = f":{self.port}" if self.port is not None else ""
        dialect = f"/{self.dialect}" if self.dialect != dialect_of(self.provider) else ""
        return f"{host}{port}={self.provider}{dialect}"

    def matches(self, host: str, port: int) -> bool:
        """Whether a normalized (lower-case, no trailing dot) host and port fall under this rule."""
        if self.port is not None and self.port != port:
            return False
        if "*" not in self.pattern:
            return host == self.pattern
        return _wildcard(self.pattern).fullmatch(host) is not None


_WILDCARDS: dict[str, re.Pattern[str]] = {}


def _wildcard(pattern: str) -> re.Pattern[str]:
    compiled = _WILDCARDS.get(pattern)
    if compiled is None:
        head, rest = ("(?:[^.]+\\.)+", pattern[2:]) if pattern.startswith("*.") else ("", pattern)
        compiled = re.compile(head + re.escape(rest).replace("\\*", "[^.]+"))
        _WILDCARDS[pattern] = compiled
    return compiled


_PROVIDER_DIALECTS: dict[str, Dialect] = {
    "anthropic": "anthropic",
    "gcp.gemini": "gemini",
    "gcp.vertex_ai": "gemini",
    "aws.bedrock": "bedrock",
    "cohere": "cohere",
}


def dialect_of(provider: str) -> Dialect:
    """The URL layout a provider's API uses (OpenAI-compatible unless known otherwise)."""
    return _PROVIDER_DIALECTS.get(provider, "openai")


def _builtin(provider: str, *patterns: str) -> list[HostRule]:
    return [HostRule(p, provider, dialect_of(provider)) for p in patterns]


BUILTIN_RULES: tuple[HostRule, ...] = (
    *_builtin("openai", "api.openai.com"),
    *_builtin(
        "azure.ai.openai", "*.openai.azure.com", "*.cognitiveservices.azure.com", "*.services.ai.azure.com"
    ),
    *_builtin("anthropic", "api.anthropic.com"),
    *_builtin("gcp.gemini", "generativelanguage.googleapis.com"),
    *_builtin("gcp.vertex_ai", "aiplatform.googleapis.com", "*-aiplatform.googleapis.com"),
    *_builtin(
        "aws.bedrock",
        "bedrock-runtime.*.amazonaws.com",
        "bedrock-runtime-fips.*.amazonaws.com",
        "bedrock-runtime.*.amazonaws.com.cn",
    ),
    *_builtin("mistral_ai", "api.mistral.ai", "codestral.mistral.ai"),
    *_builtin("cohere", "api.cohere.com", "api.cohere.ai"),
    *_builtin("groq", "api.groq.com"),
    *_builtin("deepseek", "api.deepseek.com"),
    *_builtin("x_ai", "api.x.ai"),
    *_builtin("openrouter", "openrouter.ai"),
    *_builtin("cerebras", "api.cerebras.ai"),
    *_builtin("perplexity", "api.perplexity.ai"),
    *_builtin("together_ai", "api.together.xyz", "api.together.ai"),
    *_builtin("fireworks_ai", "api.fireworks.ai"),
    *_builtin("deepinfra", "api.deepinfra.com"),
)
"""The public LLM APIs known without configuration."""


def _normalize_host(host: str) -> str:
    host = host.strip().lower()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host.rstrip(".")


_LABEL = re.compile(r"(?:\*|[a-z0-9_*](?:[a-z0-9_*-]{0,61}[a-z0-9_*])?)")
_IPV6 = re.compile(r"[0-9a-f:.]+")
_PROVIDER = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}")


def parse_host_spec(spec: str) -> HostRule:
    """Parse ``HOST[:PORT]=PROVIDER[/DIALECT]`` (``vllm.internal:8000=vllm``, ``*.corp.example=openai``).

    HOST may be an IPv6 literal in brackets. DIALECT is one of `DIALECTS`; when omitted it is the
    provider's own for a known provider and ``openai`` (the OpenAI-compatible API) otherwise.
    """
    target, sep, owner = spec.strip().partition("=")
    if not sep or not target or not owner:
        raise ValueError(f"host spec {spec!r} is not of the form HOST[:PORT]=PROVIDER[/DIALECT]")
    port: int | None = None
    if target.startswith("["):
        host, bracket, rest = target[1:].partition("]")
        if not bracket or not _IPV6.fullmatch(host.lower()) or ":" not in host:
            raise ValueError(f"host spec {spec!r}: bad IPv6 literal")
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"host spec {spec!r}: unexpected {rest!r} after the IPv6 literal")
            port = _parse_port(rest[1:], spec)
    else:
        host, colon, port_text = target.partition(":")
        if colon:
            port = _parse_port(port_text, spec)
        labels = _normalize_host(host).split(".")
        if not host or not all(_LABEL.fullmatch(label) for label in labels):
            raise ValueError(f"host spec {spec!r}: {host!r} is not a host name")
        if "*" in labels[-1]:
            raise ValueError(f"host spec {spec!r}: a wildcard must not stand for the top-level domain")
    provider, slash, dialect = owner.strip().lower().partition("/")
    if not _PROVIDER.fullmatch(provider):
        raise ValueError(f"host spec {spec!r}: {provider!r} is not a provider id")
    if slash:
        if dialect not in DIALECTS:
            raise ValueError(f"host spec {spec!r}: dialect {dialect!r} is not one of {', '.join(DIALECTS)}")
        chosen: Dialect = dialect  # type: ignore[assignment]
    else:
        chosen = dialect_of(provider)
    return HostRule(_normalize_host(host), provider, chosen, port)


def _parse_port(text: str, spec: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"host spec {spec!r}: port {text!r} is not a number from 1 to 65535")
    return int(text)


class HostTable:
    """The hosts to meter: user rules first (in their order), then the built-in ones."""

    __slots__ = ("_exact", "_rules")

    def __init__(self, rules: Iterable[HostRule] = (), *, builtins: bool = True) -> None:
        self._rules: tuple[HostRule, ...] = (*rules, *(BUILTIN_RULES if builtins else ()))
        self._exact: dict[str, tuple[HostRule, ...]] = {}
        for rule in self._rules:
            if "*" not in rule.pattern:
                self._exact[rule.pattern] = (*self._exact.get(rule.pattern, ()), rule)

    @property
    def rules(self) -> tuple[HostRule, ...]:
        """Every rule, in the order they are tried."""
        return self._rules

    def rule_for(self, host: str, port: int) -> HostRule | None:
        """The first rule that covers ``host:port``, or None for a host that is not an LLM API."""
        host = _normalize_host(host)
        for rule in self._exact.get(host, ()):
            if rule.matches(host, port):
                return rule
        for rule in self._rules:
            if "*" in rule.pattern and rule.matches(host, port):
                return rule
        return None

    def provider_for(self, host: str, port: int) -> str | None:
        """The provider id of ``host:port``, or None when its traffic is not to be intercepted."""
        rule = self.rule_for(host, port)
        return rule.provider if rule else None


@dataclass(frozen=True, slots=True)
class Route:
    """How to read one LLM call: its provider, wire API, operation, requested model and stream flag."""

    provider: str
    api: Api
    operation: str
    requested_model: str | None
    stream_requested: bool


@dataclass(frozen=True, slots=True)
class _Body:
    model: str | None = None
    stream: bool = False
    messages: bool = False


def _inspect_body(body: bytes) -> _Body:
    if not body or len(body) > MAX_BODY_INSPECTED or body.lstrip()[:1] != b"{":
        return _Body()
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return _Body()
    if not isinstance(obj, dict):
        return _Body()
    model = obj.get("model")
    return _Body(
        model=model if isinstance(model, str) and model else None,
        stream=obj.get("stream") is True,
        messages="messages" in obj,
    )


_OPENAI_PATHS: tuple[tuple[str, Api], ...] = (
    ("/chat/completions", "openai_chat"),
    ("/responses", "openai_responses"),
    ("/embeddings", "openai_embeddings"),
    ("/completions", "openai_completions"),
)
_AZURE_DEPLOYMENT = re.compile(r"/deployments/([^/]+)/")
_GOOGLE_METHOD = re.compile(r"/(?:models|tunedModels|endpoints)/([^/:]+):([A-Za-z]+)$")
_GOOGLE_PUBLISHER = re.compile(r"/publishers/([^/]+)/models/")
_BEDROCK = re.compile(r"/model/([^/]+)/(converse|converse-stream|invoke|invoke-with-response-stream)$")


def _make(provider: str, api: Api, path_model: str | None, body: _Body, stream: bool) -> Route:
    operation = OPERATIONS[api]
    if api == "bedrock_invoke" and not body.messages:
        operation = "text_completion"
    return Route(provider, api, operation, path_model or body.model, stream or body.stream)


def route(
    provider: str, method: str, path: str, body: bytes, *, dialect: Dialect | None = None
) -> Route | None:
    """How to meter a request to ``provider``, or None when it is not an LLM call.

    ``path`` may carry a query string; ``dialect`` defaults to the provider's (`dialect_of`). A
    body that is not JSON (or is too large to inspect) only leaves the requested model unknown.
    """
    if method.upper() != "POST":
        return None
    dialect = dialect or dialect_of(provider)
    path = path.partition("?")[0].partition("#")[0].rstrip("/")
    found = _dialect_route(provider, dialect, path, body)
    if found is not None:
        return found
    for suffix, api in _OPENAI_PATHS:
        if path.endswith(suffix):
            deployment = _AZURE_DEPLOYMENT.search(path)
            path_model = unquote(deployment.group(1)) if deployment else None
            return _make(provider, api, path_model, _inspect_body(body), False)
    return None


def _dialect_route(provider: str, dialect: Dialect, path: str, body: bytes) -> Route | None:
    if dialect == "anthropic" and path.endswith("/messages"):
        return _make(provider, "anthropic_messages", None, _inspect_body(body), False)
    if dialect == "cohere" and path.endswith(("/v2/chat", "/v1/chat")):
        return _make(provider, "cohere_chat", None, _inspect_body(body), False)
    if dialect == "gemini":
        m = _GOOGLE_METHOD.search(path)
        if m is None:
            return None
        model, verb = unquote(m.group(1)), m.group(2)
        api: Api
        if verb in ("generateContent", "streamGenerateContent"):
            api = "gemini_generate"
        elif verb in ("rawPredict", "streamRawPredict"):
            publisher = _GOOGLE_PUBLISHER.search(path)
            api = "anthropic_messages" if publisher and publisher.group(1) == "anthropic" else "openai_chat"
        else:
            return None
        return _make(provider, api, model, _inspect_body(body), verb.startswith("stream"))
    if dialect == "bedrock":
        m = _BEDROCK.search(path)
        if m is None:
            return None
        model, action = unquote(m.group(1)), m.group(2)
        api = "bedrock_converse" if action.startswith("converse") else "bedrock_invoke"
        return _make(
            provider,
            api,
            model,
            _inspect_body(body),
            action in ("converse-stream", "invoke-with-response-stream"),
        )
    return None
