"""Heart Rate Measurement (GATT characteristic 0x2A37) wire codec.

Layout (Bluetooth SIG Heart Rate Service 1.0, little-endian)::

    flags u8 | HR u8 or u16 | [Energy Expended u16, kJ] | [RR u16 …, 1/1024 s, oldest first]

Flag bits: 0 HR is u16 · 1 contact detected · 2 contact supported · 3 EE present ·
4 RR present · 5–7 reserved. Bit 1 without bit 2 means contact is *not supported*.

RR values are kept as the raw 1/1024 s integers (``rr_raw``) and converted to milliseconds
exactly once, here (``rr_ms``). Nothing else in the program sees the wire unit.

One stray byte after the last whole field (an odd-length RR field, or one byte where no RR
is flagged: ``10482c03ff``, ``0048ff``) does not make the notification malformed: the heart
rate and every whole RR value are decoded and the byte is kept in ``stray`` for the caller to
report (dropping the notification lost its heart rate and RR, and left a timing gap). Any
other inconsistency — a field cut short, two or more bytes nobody flagged — still raises
:class:`MalformedMeasurement`.
"""

from __future__ import annotations

import dataclasses

from settle.errors import DecodeError

HEART_RATE_SERVICE_UUID = "0000180d-0000-1000-8000-00805f9b34fb"
HEART_RATE_MEASUREMENT_UUID = "00002a37-0000-1000-8000-00805f9b34fb"
BODY_SENSOR_LOCATION_UUID = "00002a38-0000-1000-8000-00805f9b34fb"
BATTERY_LEVEL_UUID = "00002a19-0000-1000-8000-00805f9b34fb"

FLAG_HR_UINT16 = 0x01
FLAG_CONTACT_DETECTED = 0x02
FLAG_CONTACT_SUPPORTED = 0x04
FLAG_ENERGY_EXPENDED = 0x08
FLAG_RR = 0x10
FLAGS_RESERVED = 0xE0

RR_UNITS_PER_S = 1024


def rr_raw_to_ms(raw: int) -> float:
    """Convert one RR value from the wire unit (1/1024 s) to milliseconds."""
    return raw * 1000.0 / RR_UNITS_PER_S


def rr_ms_to_raw(rr_ms: float) -> int:
    """Nearest wire value (1/1024 s) for an RR interval in milliseconds (virtual strap only)."""
    return round(rr_ms * RR_UNITS_PER_S / 1000.0)


class MalformedMeasurement(DecodeError):
    """A 0x2A37 payload does not follow the Heart Rate Measurement layout."""

    def __init__(self, reason: str, data: bytes) -> None:
        super().__init__("heart rate measurement", reason, data)


@dataclasses.dataclass(frozen=True, slots=True)
class HeartRateMeasurement:
    """One decoded 0x2A37 notification.

    ``hr_bpm`` heart rate in beats/min as sent by the strap; ``rr_raw`` RR intervals in
    1/1024 s, oldest first; ``rr_ms`` the same in milliseconds (``raw * 1000 / 1024``).
    ``contact`` is True/False when the strap supports contact detection, else None.
    ``energy_expended_kj`` cumulative energy in kJ when present. ``stray`` the one byte
    found after the last whole field (empty normally; see the module docstring).
    The remaining fields keep the wire form so that ``bytes(m)`` reproduces the input.
    """

    hr_bpm: int
    rr_raw: tuple[int, ...] = ()
    contact_supported: bool = False
    contact_bit: bool = False
    energy_expended_kj: int | None = None
    hr_uint16: bool = False
    reserved_flags: int = 0
    stray: bytes = b""
    rr_ms: tuple[float, ...] = dataclasses.field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        limit = 0xFFFF if self.hr_uint16 else 0xFF
        if not 0 <= self.hr_bpm <= limit:
            fmt = "u16" if self.hr_uint16 else "u8"
            raise ValueError(f"hr_bpm {self.hr_bpm} does not fit the {fmt} format")
        if self.energy_expended_kj is not None and not 0 <= self.energy_expended_kj <= 0xFFFF:
            raise ValueError(f"energy_expended_kj {self.energy_expended_kj} out of u16 range")
        if any(not 0 <= r <= 0xFFFF for r in self.rr_raw):
            raise ValueError("rr_raw values must be u16")
        if self.reserved_flags & ~FLAGS_RESERVED:
            raise ValueError("reserved_flags may only use bits 5-7")
        if len(self.stray) > 1:
            raise ValueError("stray may hold one byte at most")
        object.__setattr__(self, "rr_raw", tuple(self.rr_raw))
        object.__setattr__(self, "rr_ms", tuple(rr_raw_to_ms(r) for r in self.rr_raw))

    @property
    def contact(self) -> bool | None:
        """Skin contact: True/False if the strap supports detection, None if it does not."""
        return self.contact_bit if self.contact_supported else None

    @property
    def flags(self) -> int:
        f = self.reserved_flags
        if self.hr_uint16:
            f |= FLAG_HR_UINT16
        if self.contact_bit:
            f |= FLAG_CONTACT_DETECTED
        if self.contact_supported:
            f |= FLAG_CONTACT_SUPPORTED
        if self.energy_expended_kj is not None:
            f |= FLAG_ENERGY_EXPENDED
        if self.rr_raw:
            f |= FLAG_RR
        return f

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> HeartRateMeasurement:
        """Decode one notification; raise :class:`MalformedMeasurement` on any inconsistency."""
        buf = bytes(data)
        if not buf:
            raise MalformedMeasurement("empty payload", buf)
        flags = buf[0]
        pos = 1
        hr_uint16 = bool(flags & FLAG_HR_UINT16)
        width = 2 if hr_uint16 else 1
        if len(buf) < pos + width:
            raise MalformedMeasurement("truncated heart rate value", buf)
        hr = int.from_bytes(buf[pos : pos + width], "little")
        pos += width
        ee: int | None = None
        if flags & FLAG_ENERGY_EXPENDED:
            if len(buf) < pos + 2:
                raise MalformedMeasurement("truncated energy expended field", buf)
            ee = int.from_bytes(buf[pos : pos + 2], "little")
            pos += 2
        rr: tuple[int, ...] = ()
        rest = buf[pos:]
        if flags & FLAG_RR:
            whole = len(rest) - len(rest) % 2
            rr = tuple(int.from_bytes(rest[i : i + 2], "little") for i in range(0, whole, 2))
            rest = rest[whole:]
        if len(rest) > 1:
            raise MalformedMeasurement(f"{len(rest)} unexpected trailing bytes", buf)
        return cls(
            hr_bpm=hr,
            rr_raw=rr,
            contact_supported=bool(flags & FLAG_CONTACT_SUPPORTED),
            contact_bit=bool(flags & FLAG_CONTACT_DETECTED),
            energy_expended_kj=ee,
            hr_uint16=hr_uint16,
            reserved_flags=flags & FLAGS_RESERVED,
            stray=rest,
        )

    def __bytes__(self) -> bytes:
        out = bytearray([self.flags])
        out += self.hr_bpm.to_bytes(2 if self.hr_uint16 else 1, "little")
        if self.energy_expended_kj is not None:
            out += self.energy_expended_kj.to_bytes(2, "little")
        for r in self.rr_raw:
            out += r.to_bytes(2, "little")
        return bytes(out + self.stray)
