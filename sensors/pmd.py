"""Polar Measurement Data (PMD) wire codecs: control point and data frames (Polar H10 ECG).

Service ``FB005C80-02E7-F387-1CAD-8ACD2D8DF0C8``; control point ``…5C81`` (read, write,
indicate) and data ``…5C82`` (notify). Sources: Polar's polar-ble-sdk documentation, the
bleakheart library, and real H10 captures (pinned in ``tests/test_pmd.py``).

Control point, little-endian throughout::

    read          0x0F | type bitmask …                          (PmdFeatures)
    request       op u8 | type u8 | [setting u8, count u8, value × count] …   (PmdCommand)
    response      0xF0 | op u8 | type u8 | error u8 | [more u8 | parameters …] (PmdResponse)

Data (notify)::

    type u8 | timestamp u64 (ns since 2000-01-01, of the LAST sample) | frame type u8 | payload
    ECG frame type 0: int24 samples in µV                             (EcgFrame)
    ACC frame type 1: int16 x, y, z in mG

Every decoder raises a subclass of :class:`~settle.errors.DecodeError` on malformed input
and nothing else (the fuzz tests in ``tests/test_pmd.py`` hold it to that). A control-point
*refusal* is not a decode error: it decodes fine and :meth:`PmdResponse.raise_for_error`
turns it into :class:`PmdRequestRefused` with a message per error code.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable, Mapping

from settle.errors import DecodeError, SensorError

PMD_SERVICE_UUID = "fb005c80-02e7-f387-1cad-8acd2d8df0c8"
PMD_CONTROL_POINT_UUID = "fb005c81-02e7-f387-1cad-8acd2d8df0c8"
PMD_DATA_UUID = "fb005c82-02e7-f387-1cad-8acd2d8df0c8"

FEATURES_TAG = 0x0F
"""First byte of a control-point read."""
RESPONSE_TAG = 0xF0
"""First byte of every control-point response indication."""
MIN_MTU = 232
"""Smallest ATT_MTU at which a Polar H10 accepts PMD requests (bytes)."""
POLAR_EPOCH_UNIX_NS = 946_684_800 * 1_000_000_000
"""2000-01-01T00:00:00Z in Unix nanoseconds: add it to a PMD timestamp for Unix time."""
DATA_HEADER_BYTES = 10
ECG_SAMPLE_BYTES = 3


class MeasurementType(enum.IntEnum):
    """PMD measurement types (the bit number in the features bitmask)."""

    ECG = 0
    PPG = 1
    ACC = 2
    PPI = 3
    GYRO = 5
    MAG = 6


class Op(enum.IntEnum):
    """Control-point operations."""

    GET_SETTINGS = 0x01
    START = 0x02
    STOP = 0x03


class SettingType(enum.IntEnum):
    """Setting identifiers of a start request / settings reply."""

    SAMPLE_RATE = 0
    RESOLUTION = 1
    RANGE = 2
    RANGE_MILLIUNIT = 3
    CHANNELS = 4
    FACTOR = 5


SETTING_VALUE_BYTES: Mapping[SettingType, int] = {
    SettingType.SAMPLE_RATE: 2,
    SettingType.RESOLUTION: 2,
    SettingType.RANGE: 2,
    SettingType.RANGE_MILLIUNIT: 4,
    SettingType.CHANNELS: 1,
    SettingType.FACTOR: 4,
}
"""Width of one value of each setting on the wire (polar-ble-sdk ``PmdSetting``)."""


class ErrorCode(enum.IntEnum):
    """Control-point response error codes."""

    SUCCESS = 0
    INVALID_OP_CODE = 1
    INVALID_MEASUREMENT_TYPE = 2
    NOT_SUPPORTED = 3
    INVALID_LENGTH = 4
    INVALID_PARAMETER = 5
    ALREADY_IN_STATE = 6
    INVALID_RESOLUTION = 7
    INVALID_SAMPLE_RATE = 8
    INVALID_RANGE = 9
    INVALID_MTU = 10
    INVALID_NUMBER_OF_CHANNELS = 11
    INVALID_STATE = 12
    DEVICE_IN_CHARGER = 13


ERROR_MESSAGES: Mapping[int, str] = {
    ErrorCode.SUCCESS: "success",
    ErrorCode.INVALID_OP_CODE: "the strap does not know this operation (invalid op code)",
    ErrorCode.INVALID_MEASUREMENT_TYPE: "the strap does not know this measurement type",
    ErrorCode.NOT_SUPPORTED: "the strap does not support this measurement",
    ErrorCode.INVALID_LENGTH: "the request has an invalid length",
    ErrorCode.INVALID_PARAMETER: (
        "invalid or missing settings (a start request must name sample rate and resolution)"
    ),
    ErrorCode.ALREADY_IN_STATE: (
        "already in that state (the stream is already running, or already stopped)"
    ),
    ErrorCode.INVALID_RESOLUTION: "the strap does not offer this resolution",
    ErrorCode.INVALID_SAMPLE_RATE: "the strap does not offer this sample rate",
    ErrorCode.INVALID_RANGE: "the strap does not offer this range",
    ErrorCode.INVALID_MTU: (
        f"ATT MTU too small: the strap needs an MTU of at least {MIN_MTU} bytes for PMD "
        "(the Bluetooth stack negotiated a smaller one)"
    ),
    ErrorCode.INVALID_NUMBER_OF_CHANNELS: "the strap does not offer this number of channels",
    ErrorCode.INVALID_STATE: "the strap is in a state that does not allow this request",
    ErrorCode.DEVICE_IN_CHARGER: "the strap is in its charger",
}


def error_message(code: int) -> str:
    """A human sentence for a control-point error code (unknown codes included)."""
    return ERROR_MESSAGES.get(code, f"unknown PMD error code {code}")


def _type_name(value: int) -> str:
    try:
        return MeasurementType(value).name
    except ValueError:
        return f"type {value}"


def _op_name(value: int) -> str:
    try:
        return Op(value).name
    except ValueError:
        return f"op 0x{value:02x}"


# -- errors ---------------------------------------------------------------------------------


class MalformedPmd(DecodeError):
    """PMD bytes that do not follow the layout; ``what`` names the part."""

    def __init__(self, what: str, reason: str, data: bytes) -> None:
        super().__init__(f"PMD {what}", reason, data)


class MalformedControlPoint(MalformedPmd):
    """A control-point read, request or response is malformed."""

    def __init__(self, reason: str, data: bytes) -> None:
        super().__init__("control point", reason, data)


class MalformedDataFrame(MalformedPmd):
    """A PMD data notification is malformed or not the expected kind."""

    def __init__(self, reason: str, data: bytes) -> None:
        super().__init__("data frame", reason, data)


class PmdRequestRefused(SensorError):
    """The strap answered a control-point request with an error code.

    ``code`` (int, see :class:`ErrorCode`), ``op`` and ``measurement_type`` are attributes.
    """

    def __init__(self, sensor_id: str, op: int, measurement_type: int, code: int) -> None:
        self.code = code
        self.op = op
        self.measurement_type = measurement_type
        super().__init__(
            sensor_id,
            f"PMD {_op_name(op)} {_type_name(measurement_type)} refused: "
            f"{error_message(code)} (error {code})",
        )


# -- settings -------------------------------------------------------------------------------


def _encode_settings(settings: Iterable[tuple[SettingType, tuple[int, ...]]]) -> bytes:
    out = bytearray()
    for setting, values in settings:
        width = SETTING_VALUE_BYTES[setting]
        out += bytes([setting, len(values)])
        for v in values:
            out += v.to_bytes(width, "little")
    return bytes(out)


def _decode_settings(buf: bytes, whole: bytes) -> tuple[tuple[SettingType, tuple[int, ...]], ...]:
    out: list[tuple[SettingType, tuple[int, ...]]] = []
    pos = 0
    while pos < len(buf):
        if pos + 2 > len(buf):
            raise MalformedControlPoint("truncated setting header", whole)
        try:
            setting = SettingType(buf[pos])
        except ValueError:
            raise MalformedControlPoint(f"unknown setting type {buf[pos]}", whole) from None
        count = buf[pos + 1]
        width = SETTING_VALUE_BYTES[setting]
        pos += 2
        end = pos + count * width
        if end > len(buf):
            raise MalformedControlPoint(f"truncated values of setting {setting.name}", whole)
        values = tuple(int.from_bytes(buf[i : i + width], "little") for i in range(pos, end, width))
        out.append((setting, values))
        pos = end
    return tuple(out)


def _validate_settings(settings: tuple[tuple[SettingType, tuple[int, ...]], ...]) -> None:
    for setting, values in settings:
        if not isinstance(setting, SettingType):
            raise ValueError(f"unknown setting {setting!r}")
        if len(values) > 0xFF:
            raise ValueError("at most 255 values per setting")
        limit = 1 << (8 * SETTING_VALUE_BYTES[setting])
        if any(not 0 <= v < limit for v in values):
            raise ValueError(f"{setting.name} values must fit {SETTING_VALUE_BYTES[setting]} B")


@dataclasses.dataclass(frozen=True, slots=True)
class PmdSettings:
    """A set of settings: each setting with its value(s), in wire order.

    In a start request each setting has one value; a GET_SETTINGS reply lists every value the
    strap offers. ``get(SettingType.SAMPLE_RATE)`` → the values (empty tuple when absent).
    """

    items: tuple[tuple[SettingType, tuple[int, ...]], ...] = ()

    def __post_init__(self) -> None:
        items = tuple((SettingType(s), tuple(v)) for s, v in self.items)
        _validate_settings(items)
        object.__setattr__(self, "items", items)

    @classmethod
    def of(cls, **values: int) -> PmdSettings:
        """``PmdSettings.of(sample_rate=130, resolution=14)``: one value per setting."""
        return cls(tuple((SettingType[k.upper()], (v,)) for k, v in values.items()))

    def get(self, setting: SettingType) -> tuple[int, ...]:
        for s, v in self.items:
            if s == setting:
                return v
        return ()

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> PmdSettings:
        buf = bytes(data)
        return cls(_decode_settings(buf, buf))

    def __bytes__(self) -> bytes:
        return _encode_settings(self.items)


ECG_130HZ_14BIT = PmdSettings.of(sample_rate=130, resolution=14)
"""The only ECG settings a Polar H10 offers."""


# -- control point ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class PmdFeatures:
    """The control point's read value: which measurement types the strap offers."""

    bitmask: int

    def __post_init__(self) -> None:
        if self.bitmask < 0:
            raise ValueError("bitmask must be >= 0")

    @property
    def types(self) -> frozenset[MeasurementType]:
        return frozenset(t for t in MeasurementType if self.bitmask >> t & 1)

    def supports(self, measurement_type: MeasurementType) -> bool:
        return bool(self.bitmask >> measurement_type & 1)

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> PmdFeatures:
        buf = bytes(data)
        if len(buf) < 2:
            raise MalformedControlPoint("features read shorter than 2 bytes", buf)
        if buf[0] != FEATURES_TAG:
            raise MalformedControlPoint(f"features read starts with 0x{buf[0]:02x}, not 0x0f", buf)
        return cls(int.from_bytes(buf[1:], "little"))

    def __bytes__(self) -> bytes:
        width = max(1, (self.bitmask.bit_length() + 7) // 8)
        return bytes([FEATURES_TAG]) + self.bitmask.to_bytes(width, "little")


@dataclasses.dataclass(frozen=True, slots=True)
class PmdCommand:
    """A control-point request: ``op``, ``measurement_type`` and (for START) settings."""

    op: Op
    measurement_type: int
    settings: PmdSettings = PmdSettings()

    def __post_init__(self) -> None:
        object.__setattr__(self, "op", Op(self.op))
        if not 0 <= self.measurement_type <= 0xFF:
            raise ValueError("measurement_type must be a byte")

    @classmethod
    def start(cls, measurement_type: int, settings: PmdSettings) -> PmdCommand:
        return cls(Op.START, measurement_type, settings)

    @classmethod
    def stop(cls, measurement_type: int) -> PmdCommand:
        return cls(Op.STOP, measurement_type)

    @classmethod
    def get_settings(cls, measurement_type: int) -> PmdCommand:
        return cls(Op.GET_SETTINGS, measurement_type)

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> PmdCommand:
        buf = bytes(data)
        if len(buf) < 2:
            raise MalformedControlPoint("request shorter than 2 bytes", buf)
        try:
            op = Op(buf[0])
        except ValueError:
            raise MalformedControlPoint(f"unknown op code 0x{buf[0]:02x}", buf) from None
        return cls(op, buf[1], PmdSettings(_decode_settings(buf[2:], buf)))

    def __bytes__(self) -> bytes:
        return bytes([self.op, self.measurement_type]) + bytes(self.settings)


@dataclasses.dataclass(frozen=True, slots=True)
class PmdResponse:
    """A control-point response indication.

    ``more`` is None when the strap sent only the 4-byte form (e.g. ``f0 01 00 0a``);
    ``parameters`` are the raw bytes after ``more``. :attr:`settings` decodes them for a
    successful GET_SETTINGS.
    """

    op: int
    measurement_type: int
    error: int
    more: int | None = 0
    parameters: bytes = b""

    def __post_init__(self) -> None:
        for name in ("op", "measurement_type", "error"):
            if not 0 <= getattr(self, name) <= 0xFF:
                raise ValueError(f"{name} must be a byte")
        if self.more is None and self.parameters:
            raise ValueError("parameters need the 'more' byte")
        if self.more is not None and not 0 <= self.more <= 0xFF:
            raise ValueError("more must be a byte")
        object.__setattr__(self, "parameters", bytes(self.parameters))

    @property
    def ok(self) -> bool:
        return self.error == ErrorCode.SUCCESS

    @property
    def message(self) -> str:
        return error_message(self.error)

    @property
    def settings(self) -> PmdSettings:
        """Settings offered, for a successful GET_SETTINGS reply (MalformedControlPoint else)."""
        whole = bytes(self)
        if self.op != Op.GET_SETTINGS or not self.ok:
            raise MalformedControlPoint("not a successful settings reply", whole)
        return PmdSettings(_decode_settings(self.parameters, whole))

    def answers(self, command: PmdCommand) -> bool:
        return self.op == command.op and self.measurement_type == command.measurement_type

    def raise_for_error(self, sensor_id: str) -> None:
        """Raise :class:`PmdRequestRefused` unless the error code is SUCCESS."""
        if not self.ok:
            raise PmdRequestRefused(sensor_id, self.op, self.measurement_type, self.error)

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> PmdResponse:
        buf = bytes(data)
        if len(buf) < 4:
            raise MalformedControlPoint("response shorter than 4 bytes", buf)
        if buf[0] != RESPONSE_TAG:
            raise MalformedControlPoint(f"response starts with 0x{buf[0]:02x}, not 0xf0", buf)
        more = buf[4] if len(buf) > 4 else None
        return cls(buf[1], buf[2], buf[3], more, buf[5:])

    def __bytes__(self) -> bytes:
        out = bytes([RESPONSE_TAG, self.op, self.measurement_type, self.error])
        if self.more is not None:
            out += bytes([self.more]) + self.parameters
        return out


# -- data --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class PmdDataFrame:
    """One PMD data notification, payload undecoded.

    ``timestamp_ns``: ns since 2000-01-01 on the strap's clock, of the LAST sample.
    ``frame_type``: bit 7 set means delta-compressed (not sent by the H10).
    """

    measurement_type: int
    timestamp_ns: int
    frame_type: int
    payload: bytes = b""

    def __post_init__(self) -> None:
        if not 0 <= self.measurement_type <= 0xFF or not 0 <= self.frame_type <= 0xFF:
            raise ValueError("measurement_type and frame_type must be bytes")
        if not 0 <= self.timestamp_ns < 1 << 64:
            raise ValueError("timestamp_ns must be a u64")
        object.__setattr__(self, "payload", bytes(self.payload))

    @property
    def compressed(self) -> bool:
        return bool(self.frame_type & 0x80)

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> PmdDataFrame:
        buf = bytes(data)
        if len(buf) < DATA_HEADER_BYTES:
            raise MalformedDataFrame(f"shorter than the {DATA_HEADER_BYTES}-byte header", buf)
        return cls(buf[0], int.from_bytes(buf[1:9], "little"), buf[9], buf[10:])

    def __bytes__(self) -> bytes:
        return (
            bytes([self.measurement_type])
            + self.timestamp_ns.to_bytes(8, "little")
            + bytes([self.frame_type])
            + self.payload
        )


@dataclasses.dataclass(frozen=True, slots=True)
class EcgFrame:
    """A decoded ECG data frame (type 0, frame type 0).

    ``timestamp_ns``: ns since 2000-01-01 (strap clock) of the LAST sample;
    ``samples_uv``: ECG in µV, oldest first (int24 on the wire), at least one: a frame
    without samples has no last sample for its timestamp to name.
    """

    timestamp_ns: int
    samples_uv: tuple[int, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "samples_uv", tuple(self.samples_uv))
        if not 0 <= self.timestamp_ns < 1 << 64:
            raise ValueError("timestamp_ns must be a u64")
        if not self.samples_uv:
            raise ValueError("an ECG frame holds at least one sample")
        if any(not -(1 << 23) <= s < 1 << 23 for s in self.samples_uv):
            raise ValueError("samples_uv must fit int24")

    @property
    def unix_ns(self) -> int:
        """Timestamp of the last sample as Unix ns (valid only if the strap clock was set)."""
        return self.timestamp_ns + POLAR_EPOCH_UNIX_NS

    @classmethod
    def from_frame(cls, frame: PmdDataFrame) -> EcgFrame:
        if frame.measurement_type != MeasurementType.ECG:
            raise MalformedDataFrame(
                f"{_type_name(frame.measurement_type)} frame where ECG was expected", bytes(frame)
            )
        if frame.frame_type != 0:
            raise MalformedDataFrame(f"unsupported ECG frame type {frame.frame_type}", bytes(frame))
        if not frame.payload:
            raise MalformedDataFrame("ECG frame holds no samples (header only)", bytes(frame))
        if len(frame.payload) % ECG_SAMPLE_BYTES:
            raise MalformedDataFrame("ECG payload is not a whole number of int24", bytes(frame))
        p = frame.payload
        samples = tuple(
            int.from_bytes(p[i : i + 3], "little", signed=True) for i in range(0, len(p), 3)
        )
        return cls(frame.timestamp_ns, samples)

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> EcgFrame:
        return cls.from_frame(PmdDataFrame.from_bytes(data))

    def __bytes__(self) -> bytes:
        payload = b"".join(s.to_bytes(3, "little", signed=True) for s in self.samples_uv)
        return bytes(PmdDataFrame(MeasurementType.ECG, self.timestamp_ns, 0, payload))


def ecg_samples_per_frame(mtu: int) -> int:
    """ECG samples in one data notification at ATT_MTU ``mtu`` (73 at 232)."""
    return max(0, (mtu - 3 - DATA_HEADER_BYTES) // ECG_SAMPLE_BYTES)
