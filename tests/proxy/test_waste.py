"""Duplicate and retry judgement, as a user reading the wasted-spend panel would expect it."""

from decimal import Decimal

from spendmeter_proxy.waste import WasteDetector, call_digest, parse_retry_count

A = call_digest("POST", "api.openai.com", "/v1/chat/completions", b'{"model":"gpt-4o","messages":[]}')
B = call_digest("POST", "api.openai.com", "/v1/chat/completions", b'{"model":"gpt-4o","messages":[1]}')


def test_digest_depends_on_every_part() -> None:
    assert A != B
    assert (
        call_digest("POST", "API.OPENAI.COM", "/v1/chat/completions", b'{"model":"gpt-4o","messages":[]}')
        == A
    )
    assert call_digest("POST", "api.openai.com", "/v1/embeddings", b'{"model":"gpt-4o","messages":[]}') != A


def test_first_call_is_neither() -> None:
    v = WasteDetector().classify(A, 0, now=0.0)
    assert not v.duplicate and not v.retry


def test_repeat_of_answered_call_is_duplicate_within_window_only() -> None:
    w = WasteDetector(window=60)
    w.record(A, succeeded=True, cost_usd=Decimal("0.01"), now=0.0)
    assert w.classify(A, 0, now=30.0).duplicate
    assert not w.classify(B, 0, now=30.0).duplicate
    assert not w.classify(A, 0, now=61.0).duplicate  # window passed


def test_repeat_of_failed_call_is_retry_carrying_its_cost_once() -> None:
    w = WasteDetector()
    w.record(A, succeeded=False, cost_usd=Decimal("0.003"), now=0.0)
    first = w.classify(A, 0, now=1.0)
    assert first.retry and not first.duplicate and first.failed_cost_usd == Decimal("0.003")
    second = w.classify(A, 0, now=2.0)
    assert second.retry and second.failed_cost_usd == 0


def test_failed_attempts_add_up() -> None:
    w = WasteDetector()
    w.record(A, succeeded=False, cost_usd=Decimal("0.001"), now=0.0)
    w.record(A, succeeded=False, cost_usd=Decimal("0.002"), now=1.0)
    assert w.classify(A, 1, now=2.0).failed_cost_usd == Decimal("0.003")


def test_sdk_retry_header_marks_retry_even_unseen() -> None:
    v = WasteDetector().classify(A, 2, now=0.0)
    assert v.retry and not v.duplicate


def test_sdk_retry_of_answered_call_is_retry_not_duplicate() -> None:
    w = WasteDetector()
    w.record(A, succeeded=True, cost_usd=None, now=0.0)
    v = w.classify(A, 1, now=1.0)
    assert v.retry and not v.duplicate


def test_memory_is_bounded() -> None:
    w = WasteDetector(capacity=100)
    for i in range(1000):
        w.record(call_digest("POST", "h", "/p", str(i).encode()), True, None, now=float(i))
    assert len(w) == 100
    assert w.classify(call_digest("POST", "h", "/p", b"999"), 0, now=1000.0).duplicate
    assert not w.classify(call_digest("POST", "h", "/p", b"0"), 0, now=1000.0).duplicate


def test_retry_count_header() -> None:
    assert (
        parse_retry_count([(b"content-type", b"application/json"), (b"X-Stainless-Retry-Count", b"2")]) == 2
    )
    assert parse_retry_count([(b"x-stainless-retry-count", b"0")]) == 0
    assert parse_retry_count([(b"x-stainless-retry-count", b"nope")]) == 0
    assert parse_retry_count([]) == 0
