"""Which hosts are LLM APIs, and which requests on them are LLM calls of which wire API."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from spendmeter_proxy.routes import HostRule, HostTable, parse_host_spec, route

TABLE = HostTable()


@pytest.mark.parametrize(
    ("host", "provider"),
    [
        ("api.openai.com", "openai"),
        ("API.OpenAI.com.", "openai"),
        ("myres.openai.azure.com", "azure.ai.openai"),
        ("myres.cognitiveservices.azure.com", "azure.ai.openai"),
        ("proj.services.ai.azure.com", "azure.ai.openai"),
        ("aiplatform.googleapis.com", "gcp.vertex_ai"),
        ("europe-west4-aiplatform.googleapis.com", "gcp.vertex_ai"),
        ("generativelanguage.googleapis.com", "gcp.gemini"),
        ("bedrock-runtime.eu-central-1.amazonaws.com", "aws.bedrock"),
        ("bedrock-runtime-fips.us-east-1.amazonaws.com", "aws.bedrock"),
        ("api.cohere.ai", "cohere"),
        ("openrouter.ai", "openrouter"),
        ("api.x.ai", "x_ai"),
        ("api.mistral.ai", "mistral_ai"),
        ("api.together.xyz", "together_ai"),
        ("example.com", None),
        ("openai.azure.com", None),
        ("evil-api.openai.com", None),
        ("api.openai.com.evil.example", None),
        ("s3.us-east-1.amazonaws.com", None),
    ],
)
def test_builtin_hosts(host: str, provider: str | None) -> None:
    assert TABLE.provider_for(host, 443) == provider


def test_host_specs() -> None:
    assert parse_host_spec("vllm.internal:8000=vllm") == HostRule("vllm.internal", "vllm", "openai", 8000)
    assert parse_host_spec("gw.corp=anthropic") == HostRule("gw.corp", "anthropic", "anthropic")
    assert parse_host_spec("*.corp.example=llm/gemini") == HostRule("*.corp.example", "llm", "gemini")
    assert parse_host_spec("[::1]:9000=local") == HostRule("::1", "local", "openai", 9000)
    table = HostTable([parse_host_spec(s) for s in ("vllm.internal:8000=vllm", "*.corp.example=gw")])
    assert table.provider_for("vllm.internal", 8000) == "vllm"
    assert table.provider_for("vllm.internal", 443) is None
    assert table.provider_for("a.b.corp.example", 443) == "gw"
    assert table.provider_for("corp.example", 443) is None
    assert (
        HostTable([parse_host_spec("api.openai.com=corp-gw")]).provider_for("api.openai.com", 443)
        == "corp-gw"
    )
    assert HostTable(builtins=False).provider_for("api.openai.com", 443) is None


@pytest.mark.parametrize(
    "spec",
    [
        "",
        "host",
        "=openai",
        "host=",
        "host:0=x",
        "host:99999=x",
        "host:http=x",
        "bad host=x",
        "host=x/soap",
        "host=Bad Provider",
        "*=x",
        "a.*=x",
        "[zz]=x",
        "[::1]x=y",
    ],
)
def test_nonsense_host_specs_are_value_errors(spec: str) -> None:
    with pytest.raises(ValueError, match="host spec"):
        parse_host_spec(spec)


@pytest.mark.parametrize(
    ("provider", "path", "body", "api", "operation", "model", "stream"),
    [
        (
            "openai",
            "/v1/chat/completions",
            b'{"model":"gpt-4o","stream":true}',
            "openai_chat",
            "chat",
            "gpt-4o",
            True,
        ),
        (
            "openai",
            "/v1/responses?x=1",
            b'{"model":"gpt-5"}',
            "openai_responses",
            "responses",
            "gpt-5",
            False,
        ),
        ("openai", "/v1/embeddings", b'{"model":"e3"}', "openai_embeddings", "embeddings", "e3", False),
        ("openai", "/v1/completions", b'{"model":"i"}', "openai_completions", "text_completion", "i", False),
        (
            "azure.ai.openai",
            "/openai/deployments/prod%20gpt/chat/completions?api-version=2024-10-21",
            b'{"model":"ignored"}',
            "openai_chat",
            "chat",
            "prod gpt",
            False,
        ),
        (
            "azure.ai.openai",
            "/openai/v1/responses",
            b'{"model":"dep"}',
            "openai_responses",
            "responses",
            "dep",
            False,
        ),
        ("groq", "/openai/v1/chat/completions", b'{"model":"m"}', "openai_chat", "chat", "m", False),
        ("openrouter", "/api/v1/chat/completions", b'{"model":"a/b"}', "openai_chat", "chat", "a/b", False),
        ("deepseek", "/chat/completions", b'{"model":"d"}', "openai_chat", "chat", "d", False),
        (
            "anthropic",
            "/v1/messages?beta=true",
            b'{"model":"c","stream":true}',
            "anthropic_messages",
            "chat",
            "c",
            True,
        ),
        (
            "gcp.gemini",
            "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
            b"{}",
            "gemini_generate",
            "generate_content",
            "gemini-2.5-flash",
            True,
        ),
        (
            "gcp.gemini",
            "/v1beta/openai/chat/completions",
            b'{"model":"g"}',
            "openai_chat",
            "chat",
            "g",
            False,
        ),
        (
            "gcp.vertex_ai",
            "/v1/projects/p/locations/us-east5/publishers/anthropic/models/claude-3-5-sonnet-v2%4020241022:streamRawPredict",
            b'{"anthropic_version":"vertex-2023-10-16"}',
            "anthropic_messages",
            "chat",
            "claude-3-5-sonnet-v2@20241022",
            True,
        ),
        (
            "gcp.vertex_ai",
            "/v1/projects/p/locations/l/publishers/mistralai/models/mistral-large:rawPredict",
            b'{"model":"mistral-large"}',
            "openai_chat",
            "chat",
            "mistral-large",
            False,
        ),
        (
            "gcp.vertex_ai",
            "/v1/projects/p/locations/l/publishers/google/models/gemini-2.0-flash:generateContent",
            b"{}",
            "gemini_generate",
            "generate_content",
            "gemini-2.0-flash",
            False,
        ),
        (
            "aws.bedrock",
            "/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/converse-stream",
            b"{}",
            "bedrock_converse",
            "chat",
            "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
            True,
        ),
        (
            "aws.bedrock",
            "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Aapplication-inference-profile%2Fab/invoke",
            b'{"messages":[]}',
            "bedrock_invoke",
            "chat",
            "arn:aws:bedrock:us-east-1:1:application-inference-profile/ab",
            False,
        ),
        (
            "aws.bedrock",
            "/model/meta.llama3-8b-instruct-v1:0/invoke-with-response-stream",
            b'{"prompt":"x"}',
            "bedrock_invoke",
            "text_completion",
            "meta.llama3-8b-instruct-v1:0",
            True,
        ),
        (
            "cohere",
            "/v2/chat",
            b'{"model":"command-r","stream":true}',
            "cohere_chat",
            "chat",
            "command-r",
            True,
        ),
    ],
)
def test_llm_calls(
    provider: str, path: str, body: bytes, api: str, operation: str, model: str, stream: bool
) -> None:
    found = route(provider, "POST", path, body)
    assert found is not None
    assert (found.provider, found.api, found.operation) == (provider, api, operation)
    assert (found.requested_model, found.stream_requested) == (model, stream)


@pytest.mark.parametrize(
    ("provider", "method", "path"),
    [
        ("openai", "GET", "/v1/models"),
        ("openai", "POST", "/v1/files"),
        ("openai", "GET", "/v1/chat/completions"),
        ("openai", "GET", "/v1/responses/resp_123"),
        ("anthropic", "POST", "/v1/messages/count_tokens"),
        ("gcp.gemini", "POST", "/v1beta/models/gemini-2.5-flash:countTokens"),
        ("aws.bedrock", "POST", "/guardrail/g1/version/1/apply"),
        ("cohere", "POST", "/v2/rerank"),
    ],
)
def test_other_requests_are_not_llm_calls(provider: str, method: str, path: str) -> None:
    assert route(provider, method, path, b"{}") is None


def test_dialect_of_a_gateway_decides_the_paths() -> None:
    found = route("corp-gw", "POST", "/anthropic/v1/messages", b'{"model":"c"}', dialect="anthropic")
    assert found is not None and found.api == "anthropic_messages"
    assert route("corp-gw", "POST", "/anthropic/v1/messages", b"{}") is None


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[1,2]",
        b'{"model": 5, "stream": "yes"}',
        b"{" * 5000,
        b'{"model":"x"' + b" " * 100,
        b"\xff\xfe",
        b'{"model":"' + b"a" * (33 * 1024 * 1024) + b'"}',
    ],
)
def test_bad_bodies_leave_the_model_unknown(body: bytes) -> None:
    found = route("openai", "POST", "/v1/chat/completions", body)
    assert found is not None
    assert found.requested_model is None and found.stream_requested is False


@given(st.binary(max_size=500), st.text(max_size=80))
def test_route_never_raises(body: bytes, path: str) -> None:
    for provider in ("openai", "anthropic", "gcp.vertex_ai", "aws.bedrock", "cohere"):
        found = route(provider, "POST", "/" + path, body)
        assert found is None or found.provider == provider
