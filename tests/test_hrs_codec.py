"""Heart Rate Measurement (0x2A37) codec: real captures, every flag combination, round trips."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sensors.hrs import HeartRateMeasurement, MalformedMeasurement, rr_raw_to_ms
from settle.errors import DecodeError, SettleError

# Real captures (from bleakheart, polar-ble-sdk issues and H10/Garmin dumps; sources named):
# hex, HR, contact (True/False/None = not supported), raw RR values.
REAL_VECTORS = [
    ("063c", 60, True, ()),
    ("163c1104", 60, True, (1041,)),
    ("163cf503", 60, True, (1013,)),
    ("164d1603", 77, True, (790,)),
    ("164e1b031203", 78, True, (795, 786)),
    ("16447d03", 68, True, (893,)),
    ("103b5304", 59, None, (1107,)),
    ("10482c03", 72, None, (812,)),
    ("10495e039603", 73, None, (862, 918)),
    ("1054aa029902", 84, None, (682, 665)),
    ("144659035803", 70, False, (857, 856)),
    ("1634e404", 52, True, (1252,)),
    ("1633de04", 51, True, (1246,)),
    ("12367804", 54, None, (1144,)),  # bit 1 without bit 2: contact NOT supported
    ("0236", 54, None, ()),
    ("16485401ec02", 72, True, (340, 748)),
]


@pytest.mark.parametrize(("hexstr", "hr", "contact", "rr_raw"), REAL_VECTORS)
def test_real_captures_decode_and_round_trip(
    hexstr: str, hr: int, contact: bool | None, rr_raw: tuple[int, ...]
) -> None:
    m = HeartRateMeasurement.from_bytes(bytes.fromhex(hexstr))
    assert m.hr_bpm == hr
    assert m.contact is contact
    assert m.rr_raw == rr_raw
    assert m.rr_ms == tuple(r * 1000 / 1024 for r in rr_raw)
    assert bytes(m).hex() == hexstr


def test_readme_ms_values() -> None:
    # The README's rounded ms values: 1041 -> 1016.6, 682 -> 666.0, 340 -> 332.0
    assert round(rr_raw_to_ms(1041), 1) == 1016.6
    assert round(rr_raw_to_ms(682), 1) == 666.0
    assert round(rr_raw_to_ms(340), 1) == 332.0


@pytest.mark.parametrize(
    ("hexstr", "hr", "ee", "rr_raw", "contact"),
    [  # Polar SDK unit-test vectors (BleHrClientTest.kt)
        ("018080", 32896, None, (), None),
        ("0400", 0, None, (), False),
        ("090000ffff", 0, 65535, (), None),
        ("08007f80", 0, 32895, (), None),
        ("110000ffff7f80", 0, None, (65535, 32895), None),
    ],
)
def test_polar_sdk_vectors(
    hexstr: str, hr: int, ee: int | None, rr_raw: tuple[int, ...], contact: bool | None
) -> None:
    m = HeartRateMeasurement.from_bytes(bytes.fromhex(hexstr))
    assert (m.hr_bpm, m.energy_expended_kj, m.rr_raw, m.contact) == (hr, ee, rr_raw, contact)
    if rr_raw:
        assert [round(v) for v in m.rr_ms] == [63999, 32124]
    assert bytes(m).hex() == hexstr


@pytest.mark.parametrize("flags", range(32))
@pytest.mark.parametrize("n_rr", [0, 1, 3, 9])
def test_every_flag_combination(flags: int, n_rr: int) -> None:
    hr_u16 = bool(flags & 0x01)
    hr = 300 if hr_u16 else 71
    has_ee = bool(flags & 0x08)
    has_rr = bool(flags & 0x10)
    body = hr.to_bytes(2 if hr_u16 else 1, "little")
    if has_ee:
        body += (1234).to_bytes(2, "little")
    rr = tuple(800 + 7 * i for i in range(n_rr)) if has_rr else ()
    for r in rr:
        body += r.to_bytes(2, "little")
    if has_rr and not rr:
        # RR flag set with an empty list: valid on the wire, decodes to no RR.
        m = HeartRateMeasurement.from_bytes(bytes([flags]) + body)
        assert m.rr_raw == ()
        return
    data = bytes([flags]) + body
    m = HeartRateMeasurement.from_bytes(data)
    assert m.hr_bpm == hr
    assert m.hr_uint16 is hr_u16
    assert m.energy_expended_kj == (1234 if has_ee else None)
    assert m.rr_raw == rr
    supported, detected = bool(flags & 0x04), bool(flags & 0x02)
    assert m.contact == (detected if supported else None)
    assert bytes(m) == data


@pytest.mark.parametrize(
    ("hexstr", "reason"),
    [
        ("", "empty"),
        ("01", "truncated heart rate"),
        ("0148", "truncated heart rate"),
        ("0848", "truncated energy"),
        ("084801", "truncated energy"),
        ("10480102", "odd number"[:3]),
        ("0048ffff", "2 unexpected trailing bytes"),
        ("084801020304", "2 unexpected trailing bytes"),
    ],
)
def test_malformed_input_raises_typed_error(hexstr: str, reason: str) -> None:
    data = bytes.fromhex(hexstr)
    if hexstr == "10480102":
        # 4 bytes: flags, HR, one full RR: that is valid; keep it as a control.
        assert HeartRateMeasurement.from_bytes(data).rr_raw == (0x0201,)
        return
    with pytest.raises(MalformedMeasurement) as exc:
        HeartRateMeasurement.from_bytes(data)
    assert reason in str(exc.value)
    assert isinstance(exc.value, DecodeError)
    assert isinstance(exc.value, SettleError)
    assert exc.value.data == data


@pytest.mark.parametrize(
    ("hexstr", "hr", "rr"),
    [
        ("10482c03ff", 72, (812,)),  # the real H10 capture 10482c03 with a stray byte
        ("10495e03960300", 73, (862, 918)),
        ("104801", 72, ()),  # RR flagged, one byte: no whole RR
        ("0048ff", 72, ()),  # no RR flagged
        ("1948000100ff", 72, ()),  # u16 HR, energy expended 1 kJ
    ],
)
def test_one_stray_byte_keeps_the_heart_rate_and_whole_rr(
    hexstr: str, hr: int, rr: tuple[int, ...]
) -> None:
    """A stray trailing byte made the whole notification malformed: its heart rate and RR
    were dropped (a timing gap). Now they are decoded and the byte set aside for a warning."""
    data = bytes.fromhex(hexstr)
    m = HeartRateMeasurement.from_bytes(data)
    assert (m.hr_bpm, m.rr_raw, m.stray) == (hr, rr, data[-1:])
    assert m.rr_ms == tuple(rr_raw_to_ms(r) for r in rr)
    assert HeartRateMeasurement.from_bytes(bytes(m)) == m
    if rr or not data[0] & 0x10:  # the RR flag without a whole RR re-encodes without it
        assert bytes(m) == data
    assert HeartRateMeasurement.from_bytes(bytes.fromhex("10482c03")).stray == b""


measurements = st.builds(
    lambda u16, hr8, hr16, sup, det, ee, rr, res: HeartRateMeasurement(
        hr_bpm=hr16 if u16 else hr8,
        hr_uint16=u16,
        contact_supported=sup,
        contact_bit=det,
        energy_expended_kj=ee,
        rr_raw=tuple(rr),
        reserved_flags=res,
    ),
    st.booleans(),
    st.integers(0, 255),
    st.integers(0, 65535),
    st.booleans(),
    st.booleans(),
    st.none() | st.integers(0, 65535),
    st.lists(st.integers(0, 65535), max_size=9),
    st.sampled_from([0, 0x20, 0x40, 0x80, 0xE0]),
)


@given(measurements)
def test_round_trip_property(m: HeartRateMeasurement) -> None:
    again = HeartRateMeasurement.from_bytes(bytes(m))
    assert again == m
    assert again.rr_ms == m.rr_ms
    assert bytes(again) == bytes(m)


@given(st.binary(max_size=40))
def test_arbitrary_bytes_only_typed_errors(data: bytes) -> None:
    try:
        m = HeartRateMeasurement.from_bytes(data)
    except MalformedMeasurement:
        return
    # Semantically stable: re-encoding and decoding gives the same measurement (the RR flag
    # with zero RR values is the one wire form that re-encodes without its flag).
    assert HeartRateMeasurement.from_bytes(bytes(m)) == m


def test_invalid_construction_rejected() -> None:
    with pytest.raises(ValueError):
        HeartRateMeasurement(hr_bpm=300)
    with pytest.raises(ValueError):
        HeartRateMeasurement(hr_bpm=60, rr_raw=(70000,))
