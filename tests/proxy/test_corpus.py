"""Every recorded provider exchange is routed and metered to the hand-read numbers.

Non-stream bodies go through `parse_body`, streams through `new_meter` (fed whole here, and split
at arbitrary points in the property test); the five normalized counts, the answering model and the
provider id must match the corpus exactly.
"""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from samples import Sample, expected_usage, load_samples, provider_id
from spendmeter_proxy.parsing import is_stream, new_meter, parse_body
from spendmeter_proxy.routes import HostTable, Route, route
from spendmeter_proxy.usage import Reading, Usage

SAMPLES = load_samples()
STREAMS = [s for s in SAMPLES if s.streaming and not s.is_error]
HOSTS = HostTable()
FIRST_READ = 4096  # what a first network read typically holds: enough to sniff a missing content type


def _route(sample: Sample) -> Route:
    provider = HOSTS.provider_for(sample.host, 443)
    assert provider is not None, f"{sample.host} is not recognised as an LLM API"
    if sample.path is None:
        pytest.skip("the recording has no request path")
    found = route(provider, sample.method, sample.path, sample.request_body or b"")
    assert found is not None, f"{sample.method} {sample.path} is not recognised as an LLM call"
    return found


def _read(sample: Sample, pieces: list[bytes] | None = None) -> Reading:
    found = _route(sample)
    body = sample.response_body
    if not is_stream(sample.content_type, body[:FIRST_READ]):
        return parse_body(found, body, sample.content_type)
    meter = new_meter(found, sample.content_type, body[:FIRST_READ])
    for piece in pieces if pieces is not None else [body]:
        meter.feed(piece)
    return meter.reading()


def _five(usage: Usage | None) -> Usage | None:
    return None if usage is None else dataclasses.replace(usage, cache_write_1h_tokens=0)


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda s: s.id)
def test_route_names_provider_and_requested_model(sample: Sample) -> None:
    found = _route(sample)
    assert found.provider == provider_id(sample)
    if sample.request_body is not None or sample.expected.get("requested_model") is None:
        assert found.requested_model == sample.expected.get("requested_model")


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda s: s.id)
def test_reading_matches_hand_read_usage(sample: Sample) -> None:
    reading = _read(sample)
    assert _five(reading.usage) == expected_usage(sample)
    if sample.expected.get("model") is not None:
        assert reading.model == sample.expected["model"]
    if sample.is_error:
        assert reading.error is not None
    elif "stream_error" not in sample.expected:
        assert reading.error is None


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda s: s.id)
def test_stream_framing_is_recognised(sample: Sample) -> None:
    body = sample.response_body
    assert is_stream(sample.content_type, body[:FIRST_READ]) == (sample.streaming and not sample.is_error)
    assert is_stream(None, body[:FIRST_READ]) == (sample.streaming and not sample.is_error)


def test_reported_extras() -> None:
    by_id = {s.id: s for s in SAMPLES}
    for sample_id in ("openrouter__chat_anthropic_cache_cost", "openrouter__stream_model_fallback_to_xai"):
        sample = by_id[sample_id]
        assert _read(sample).reported_cost_usd == pytest.approx(sample.expected["cost_usd"])
    midstream = _read(by_id["openrouter__stream_midstream_error"])
    assert midstream.error is not None and midstream.usage is not None
    assert midstream.reported_cost_usd == 0
    for sample in SAMPLES:
        if "traffic_type" in sample.expected:
            assert _read(sample).traffic_type == sample.expected["traffic_type"]


@pytest.mark.parametrize("sample", STREAMS, ids=lambda s: s.id)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_stream_split_anywhere_reads_the_same(sample: Sample, data: st.DataObject) -> None:
    body = sample.response_body
    cuts = sorted(data.draw(st.lists(st.integers(0, len(body)), max_size=40)))
    pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
    assert _read(sample, pieces) == _read(sample)


@pytest.mark.parametrize(
    ("sample_id", "cut_before"),
    [
        ("anthropic__stream_plain", b"event: content_block_start"),
        ("bedrock__converse_stream_nova", None),
    ],
)
def test_cut_stream_keeps_what_arrived(sample_id: str, cut_before: bytes | None) -> None:
    sample = next(s for s in SAMPLES if s.id == sample_id)
    body = sample.response_body
    if cut_before is not None:  # the answer is cut after the input side was reported
        partial = _read(sample, [body[: body.index(cut_before)]])
        expected = expected_usage(sample)
        assert partial.usage is not None and expected is not None
        assert partial.usage.input_tokens == expected.input_tokens
        assert partial.usage.output_tokens < expected.output_tokens
    else:  # cut before the final usage event: nothing to report yet, and no exception
        assert _read(sample, [body[: len(body) - 100]]).usage is None
    assert _read(sample, [b""]).usage is None
