"""The AWS event-stream decoder: frames, every header type, CRC checks, any split points."""

from __future__ import annotations

import datetime
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st
from samples import load_samples
from spendmeter_proxy._eventstream import EventStreamDecoder, Frame, HeaderValue, encode_frame

RECORDED = [s for s in load_samples() if s.content_type and s.content_type.endswith("amazon.eventstream")]


def test_recorded_streams_decode_to_the_recorded_frames() -> None:
    assert RECORDED
    for sample in RECORDED:
        frames = EventStreamDecoder().feed(sample.response_body)
        recorded = sample.raw["response"]["decoded_event_stream"]
        assert [f.headers for f in frames] == [r["headers"] for r in recorded]
        assert [f.payload.decode() for f in frames] == [r["payload"] for r in recorded]


def test_every_header_type_round_trips() -> None:
    headers: dict[str, HeaderValue] = {
        ":event-type": "metadata",
        "yes": True,
        "no": False,
        "small": -7,
        "big": 2**40,
        "blob": b"\x00\xff",
        "when": datetime.datetime(2025, 7, 29, 20, 39, 39, 123000, tzinfo=datetime.UTC),
        "id": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    }
    [frame] = EventStreamDecoder().feed(encode_frame(headers, b'{"usage":{}}'))
    assert frame == Frame(headers, b'{"usage":{}}')


@given(st.lists(st.binary(max_size=200), min_size=1, max_size=5), st.lists(st.integers(0, 2000), max_size=15))
def test_split_anywhere_gives_the_same_frames(payloads: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(encode_frame({":event-type": "chunk"}, p) for p in payloads)
    bounds = sorted({min(c, len(stream)) for c in cuts})
    decoder = EventStreamDecoder()
    frames = [
        f
        for a, b in zip([0, *bounds], [*bounds, len(stream)], strict=True)
        for f in decoder.feed(stream[a:b])
    ]
    assert [f.payload for f in frames] == payloads
    assert decoder.pending == 0


@given(st.binary(min_size=1, max_size=100), st.data())
def test_any_flipped_bit_is_an_integrity_error(payload: bytes, data: st.DataObject) -> None:
    frame = bytearray(encode_frame({":event-type": "chunk"}, payload))
    index = data.draw(st.integers(0, len(frame) - 1))
    frame[index] ^= 1 << data.draw(st.integers(0, 7))
    decoder = EventStreamDecoder()
    with pytest.raises(ValueError, match=r"CRC|length"):
        decoder.feed(bytes(frame) + bytes(16))  # padding so a shortened length still completes
    with pytest.raises(ValueError):
        decoder.feed(b"")


def test_absurd_length_is_refused_before_waiting_for_it() -> None:
    import struct
    import zlib

    prelude = struct.pack(">II", 1 << 30, 0)
    with pytest.raises(ValueError, match="out of range"):
        EventStreamDecoder().feed(prelude + struct.pack(">I", zlib.crc32(prelude)))
