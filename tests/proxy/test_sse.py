"""The SSE decoder: events complete at blank lines, whatever the line endings and split points."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from samples import load_samples
from spendmeter_proxy._sse import SSEDecoder, SSEEvent

SSE_BODIES = [s.response_body for s in load_samples() if s.content_type and "event-stream" in s.content_type]


def decode(pieces: list[bytes]) -> list[SSEEvent]:
    decoder = SSEDecoder()
    events = [e for p in pieces for e in decoder.feed(p)]
    return events + decoder.flush()


def test_fields_comments_and_multiline_data() -> None:
    events = decode([b': OPENROUTER PROCESSING\n\nevent: ping\ndata:{"a":1}\ndata: two\nid: 7\n\n'])
    assert [e.comment_only for e in events] == [True, False]
    assert events[1].event == "ping"
    assert events[1].data == '{"a":1}\ntwo'


def test_every_line_ending_and_crlf_split_across_feeds() -> None:
    events = decode([b"data: a\r", b"\n\r", b"\ndata: b\r\rdata: c\n\n"])
    assert [e.data for e in events] == ["a", "b", "c"]
    assert b"".join(e.raw for e in events) == b"data: a\r\n\r\ndata: b\r\rdata: c\n\n"


def test_event_waits_for_its_blank_line_and_flush_returns_the_rest() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: x\n") == []
    assert decoder.feed(b"data: y") == []
    [last] = decoder.flush()
    assert last.data == "x\ny" and last.raw == b"data: x\ndata: y"
    assert decoder.flush() == []


def test_invalid_utf8_is_replaced_in_data_but_kept_in_raw() -> None:
    [event] = decode([b"data: caf\xc3", b"\xa9 \xff\n\n"])
    assert event.data == "caf\u00e9 \ufffd"
    assert event.raw == b"data: caf\xc3\xa9 \xff\n\n"


def test_recorded_streams_decode_to_their_data_events() -> None:
    for body in SSE_BODIES:
        events = decode([body])
        assert b"".join(e.raw for e in events) == body
        assert sum(1 for e in events if not e.comment_only) == body.count(b"data:")


@given(st.binary(max_size=300), st.lists(st.integers(0, 300), max_size=20))
def test_raw_concatenation_is_the_input(data: bytes, cuts: list[int]) -> None:
    bounds = sorted({min(c, len(data)) for c in cuts})
    pieces = [data[a:b] for a, b in zip([0, *bounds], [*bounds, len(data)], strict=True)]
    split = decode(pieces)
    assert b"".join(e.raw for e in split) == data
    assert split == decode([data])


@given(
    st.lists(
        st.tuples(
            st.sampled_from([b"\n", b"\r\n", b"\r"]),
            st.text(alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\r\n")),
        ),
        min_size=1,
        max_size=8,
    ),
    st.lists(st.integers(0, 2000), max_size=10),
)
def test_data_survives_any_line_ending(lines: list[tuple[bytes, str]], cuts: list[int]) -> None:
    stream = b"".join(b"data: " + text.encode() + eol + eol for eol, text in lines)
    bounds = sorted({min(c, len(stream)) for c in cuts})
    pieces = [stream[a:b] for a, b in zip([0, *bounds], [*bounds, len(stream)], strict=True)]
    assert [e.data for e in decode(pieces)] == [text for _, text in lines]
