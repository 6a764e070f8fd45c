"""Compressed bodies decode to the same bytes and the same usage, whatever the chunking."""

from __future__ import annotations

import gzip
import zlib

import brotli  # type: ignore[import-untyped]
import pytest
from backports import zstd
from hypothesis import given, settings
from hypothesis import strategies as st
from samples import Sample, load_samples
from spendmeter_proxy._content import ContentDecoder
from spendmeter_proxy.parsing import new_meter
from spendmeter_proxy.routes import HostTable, route

COMPRESS = {
    "gzip": gzip.compress,
    "deflate": zlib.compress,
    "br": brotli.compress,
    "zstd": zstd.compress,
}
STREAMS = [s for s in load_samples() if s.streaming and not s.is_error]


def _decode(encoding: str, data: bytes, cuts: list[int]) -> bytes:
    bounds = sorted({min(c, len(data)) for c in cuts})
    decoder = ContentDecoder(encoding)
    out = [decoder.decode(data[a:b]) for a, b in zip([0, *bounds], [*bounds, len(data)], strict=True)]
    return b"".join(out) + decoder.flush()


@pytest.mark.parametrize("encoding", sorted(COMPRESS))
@given(data=st.binary(max_size=3000), cuts=st.lists(st.integers(0, 4000), max_size=20))
def test_round_trip_at_any_split(encoding: str, data: bytes, cuts: list[int]) -> None:
    assert _decode(encoding, COMPRESS[encoding](data), cuts) == data


def test_raw_deflate_gzip_members_zstd_frames_and_chains() -> None:
    raw = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    assert _decode("deflate", raw.compress(b"hello") + raw.flush(), [1, 2]) == b"hello"
    assert _decode("gzip", gzip.compress(b"a") + gzip.compress(b"b"), [3]) == b"ab"
    assert _decode("zstd", zstd.compress(b"a") + zstd.compress(b"b"), [5]) == b"ab"
    assert _decode("gzip, br", brotli.compress(gzip.compress(b"both")), [2]) == b"both"
    assert _decode("identity", b"plain", [2]) == b"plain"
    assert _decode(" GZIP ", gzip.compress(b"case"), []) == b"case"


def test_unknown_or_corrupt_encoding_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="compress"):
        ContentDecoder("compress")
    with pytest.raises(ValueError, match="gzip"):
        ContentDecoder("gzip").decode(b"\x1f\x8b\x08garbage-garbage")
    with pytest.raises(ValueError, match="zstd"):
        ContentDecoder("zstd").decode(b"not zstd at all")


@pytest.mark.parametrize("encoding", ["gzip", "br", "zstd"])
@pytest.mark.parametrize("sample", STREAMS, ids=lambda s: s.id)
@settings(max_examples=6, deadline=None)
@given(cuts=st.lists(st.integers(0, 100_000), max_size=25))
def test_compressed_streams_meter_like_plain_ones(encoding: str, sample: Sample, cuts: list[int]) -> None:
    provider = HostTable().provider_for(sample.host, 443)
    assert provider is not None and sample.path is not None
    found = route(provider, sample.method, sample.path, sample.request_body or b"")
    assert found is not None
    body = sample.response_body
    plain = new_meter(found, sample.content_type, body[:4096])
    plain.feed(body)
    packed = COMPRESS[encoding](body)
    bounds = sorted({min(c, len(packed)) for c in cuts})
    decoder = ContentDecoder(encoding)
    meter = new_meter(found, sample.content_type, body[:4096])
    for a, b in zip([0, *bounds], [*bounds, len(packed)], strict=True):
        meter.feed(decoder.decode(packed[a:b]))
    meter.feed(decoder.flush())
    assert meter.reading() == plain.reading()
    assert meter.reading().usage is not None
