import pytest

from paper_gateway.wire import (
    UNSET_DOUBLE,
    UNSET_INTEGER,
    FieldReader,
    FrameDecoder,
    ProtocolError,
    encode_fields,
    frame,
    split_fields,
)


def test_frames_split_across_reads_are_reassembled_after_the_api_prefix():
    dec = FrameDecoder()
    data = b"API\0" + frame(b"v157..176") + frame(b"71\x002\x001\x00\x00")
    out = []
    for i in range(len(data)):
        out += dec.feed(data[i : i + 1])
    assert out == [b"v157..176", b"71\x002\x001\x00\x00"]


def test_connection_without_api_prefix_is_a_protocol_error():
    with pytest.raises(ProtocolError):
        FrameDecoder().feed(b"GET / HTTP/1.1\r\n")


def test_oversized_frame_is_refused():
    dec = FrameDecoder()
    with pytest.raises(ProtocolError):
        dec.feed(b"API\0" + (64 * 1024 * 1024).to_bytes(4, "big"))


def test_unset_values_encode_as_empty_fields_and_bools_as_digits():
    payload = encode_fields([1, UNSET_DOUBLE, UNSET_INTEGER, None, True, False, 1.5, "x"])
    assert split_fields(payload) == ["1", "", "", "", "1", "0", "1.5", "x"]


def test_field_reader_reads_typed_values_and_reports_short_messages():
    r = FieldReader(["3", "", "2.5", "1", "abc"])
    assert r.integer() == 3
    assert r.number() == UNSET_DOUBLE
    assert r.number() == 2.5
    assert r.flag() is True
    assert r.text() == "abc"
    with pytest.raises(ProtocolError):
        r.text()
