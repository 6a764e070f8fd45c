"""The recorded provider exchanges (``provider-samples``), loaded for tests.

Each sample is one real HTTP exchange with an LLM API and the usage read off it by hand (see the
corpus README). `load_samples` reads them all; `expected_usage` turns the hand-read numbers into
the normalized `Usage` spendmeter must report; `provider_id` maps the corpus's provider labels to
spendmeter's (OpenTelemetry) ids. The folder is ``<repo>/../shared/provider-samples`` unless the
environment variable ``SPENDMETER_SAMPLES`` names another.
"""

from __future__ import annotations

import base64
import functools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spendmeter_proxy.usage import Usage

__all__ = ["PROVIDER_IDS", "Sample", "expected_usage", "load_samples", "provider_id", "samples_dir"]

PROVIDER_IDS: dict[str, str] = {
    "aws_bedrock": "aws.bedrock",
    "google_gemini": "gcp.gemini",
    "google_vertex": "gcp.vertex_ai",
    "azure_openai": "azure.ai.openai",
    "xai": "x_ai",
    "mistral": "mistral_ai",
}
"""Corpus provider labels that differ from spendmeter's provider ids."""


@dataclass(frozen=True)
class Sample:
    """One recorded exchange. Bodies are bytes (base64-encoded event streams already decoded)."""

    id: str
    source_kind: str
    method: str
    host: str
    path: str | None
    request_headers: dict[str, str]
    request_body: bytes | None
    status: int
    response_headers: dict[str, str]
    response_body: bytes
    expected: dict[str, Any]
    notes: str = ""
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def provider_label(self) -> str:
        """The corpus's own provider label (``aws_bedrock``, ``openai``, ...)."""
        label: str = self.expected["provider"]
        return label

    @property
    def streaming(self) -> bool:
        return bool(self.expected.get("streaming"))

    @property
    def is_error(self) -> bool:
        return bool(self.expected.get("is_error"))

    @property
    def content_type(self) -> str | None:
        """The response Content-Type, when the recording kept it."""
        return next((v for k, v in self.response_headers.items() if k.lower() == "content-type"), None)


def samples_dir() -> Path:
    """Where the corpus lives."""
    override = os.environ.get("SPENDMETER_SAMPLES")
    if override:
        return Path(override)
    return Path(__file__).resolve().parent.parent.parent / "shared" / "provider-samples"


def _sample(data: dict[str, Any]) -> Sample:
    request, response = data["request"], data["response"]
    body = response.get("body") or ""
    if response.get("body_encoding") == "base64":
        response_body = base64.b64decode(body)
    else:
        response_body = body.encode("utf-8")
    request_body = request.get("body")
    return Sample(
        id=data["id"],
        source_kind=data.get("source_kind", ""),
        method=request.get("method") or "POST",
        host=request["host"],
        path=request.get("path"),
        request_headers=dict(request.get("headers") or {}),
        request_body=request_body.encode("utf-8") if isinstance(request_body, str) else None,
        status=int(response.get("status") or 200),
        response_headers=dict(response.get("headers") or {}),
        response_body=response_body,
        expected=dict(data["expected"]),
        notes=data.get("notes", ""),
        raw=data,
    )


@functools.cache
def _load(folder: Path) -> tuple[Sample, ...]:
    files = sorted(folder.glob("*__*.json"))
    if not files:
        raise FileNotFoundError(f"no provider samples in {folder} (set SPENDMETER_SAMPLES)")
    return tuple(_sample(json.loads(f.read_text(encoding="utf-8"))) for f in files)


def load_samples() -> list[Sample]:
    """Every sample, sorted by id."""
    return list(_load(samples_dir()))


def provider_id(sample: Sample) -> str:
    """spendmeter's provider id for the sample's provider label."""
    return PROVIDER_IDS.get(sample.provider_label, sample.provider_label)


def _count(expected: dict[str, Any], key: str, fallback: str | None = None) -> int:
    value = expected.get(key)
    if value is None and fallback is not None:
        value = expected.get(fallback)
    return int(value or 0)


def expected_usage(sample: Sample) -> Usage | None:
    """The normalized usage the corpus README prescribes for the sample (None for error samples).

    ``cache_write_1h_tokens`` is not part of the hand-read numbers and stays 0: compare the other
    five counts.
    """
    if sample.is_error:
        return None
    e = sample.expected
    cohere = sample.provider_label == "cohere"
    return Usage(
        input_tokens=_count(e, "input_tokens") if cohere else _count(e, "total_input_tokens", "input_tokens"),
        output_tokens=_count(e, "total_output_tokens", "output_tokens"),
        cached_input_tokens=0 if cohere else _count(e, "cached_input_tokens"),
        cache_write_tokens=_count(e, "cache_write_tokens"),
        reasoning_tokens=_count(e, "reasoning_tokens"),
    )
