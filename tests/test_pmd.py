"""Polar PMD: codecs on real H10 byte exchanges, fuzzing, and the virtual strap's PMD service
driven through the real stack (bleak BleakClient → bumble backend → VirtualStrap).

Real vectors come from public sources (bleakheart, polar-ble-sdk, H10 captures).
"""

from __future__ import annotations

import asyncio
import functools
import random
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from bleak import BleakClient
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.exc import BleakDeviceNotFoundError
from bumble import hci
from hypothesis import given, settings
from hypothesis import strategies as st

from sensors.ecg_stream import PmdNoReply, PmdSession, PmdUnavailable
from sensors.hrs import HeartRateMeasurement, MalformedMeasurement
from sensors.pmd import (
    ECG_130HZ_14BIT,
    ERROR_MESSAGES,
    PMD_CONTROL_POINT_UUID,
    PMD_DATA_UUID,
    EcgFrame,
    ErrorCode,
    MalformedControlPoint,
    MalformedDataFrame,
    MalformedPmd,
    MeasurementType,
    Op,
    PmdCommand,
    PmdDataFrame,
    PmdFeatures,
    PmdRequestRefused,
    PmdResponse,
    PmdSettings,
    SettingType,
    ecg_samples_per_frame,
    error_message,
)
from sensors.virtual import VirtualAir, VirtualStrap
from sensors.virtual.air import CENTRAL_ADDRESS
from sensors.virtual.pmd import DEFAULT_FIRST_TIMESTAMP_NS, PmdConfig
from settle.errors import DecodeError, SensorError

DATA = Path(__file__).parent / "data"
LIMIT_S = 10.0
SPEED = 50.0  # one PMD frame (0.56 simulated s) every ~11 ms of wall time
FS = 130.0
H = bytes.fromhex

# -- real byte exchanges --------------------------------------------------------------------

START_ECG = H("02000001820001010e00")
START_ACC = H("02020201080000 01c800 01011000".replace(" ", ""))
SETTINGS_REPLY = H("f00100000000018200 01010e00".replace(" ", ""))


@functools.cache
def h10_ecg_uv() -> tuple[int, ...]:
    raw = np.loadtxt(DATA / "polar_h10_pvc_ecg.csv", delimiter=",", skiprows=1, dtype=np.int64)
    return tuple(int(v) for v in raw[:, 1])


def test_start_ecg_command_bytes() -> None:
    cmd = PmdCommand.start(MeasurementType.ECG, ECG_130HZ_14BIT)
    assert bytes(cmd) == START_ECG
    assert PmdCommand.from_bytes(START_ECG) == cmd
    assert bytes(PmdCommand.stop(MeasurementType.ECG)) == H("0300")
    assert bytes(PmdCommand.get_settings(MeasurementType.ECG)) == H("0100")


def test_start_acc_command_bytes() -> None:
    cmd = PmdCommand.from_bytes(START_ACC)
    assert cmd.op is Op.START and cmd.measurement_type == MeasurementType.ACC
    assert cmd.settings.get(SettingType.RANGE) == (8,)
    assert cmd.settings.get(SettingType.SAMPLE_RATE) == (200,)
    assert cmd.settings.get(SettingType.RESOLUTION) == (16,)
    assert bytes(cmd) == START_ACC


def test_real_replies() -> None:
    ok = PmdResponse.from_bytes(H("f00200000000"))
    assert (ok.op, ok.measurement_type, ok.error, ok.ok) == (Op.START, 0, 0, True)
    assert bytes(ok) == H("f00200000000")

    mtu = PmdResponse.from_bytes(H("f001000a"))
    assert mtu.error == ErrorCode.INVALID_MTU and mtu.more is None and not mtu.ok
    assert bytes(mtu) == H("f001000a")
    with pytest.raises(PmdRequestRefused, match="at least 232") as info:
        mtu.raise_for_error("h10")
    assert info.value.code == 10 and info.value.op == Op.GET_SETTINGS

    param = PmdResponse.from_bytes(H("f002000500"))
    assert param.error == ErrorCode.INVALID_PARAMETER and param.parameters == b""
    with pytest.raises(PmdRequestRefused, match="START ECG refused: invalid or missing settings"):
        param.raise_for_error("h10")

    already = PmdResponse.from_bytes(H("f002000600"))
    with pytest.raises(PmdRequestRefused, match="already"):
        already.raise_for_error("h10")

    reply = PmdResponse.from_bytes(SETTINGS_REPLY)
    assert reply.ok and bytes(reply) == SETTINGS_REPLY
    assert reply.settings == ECG_130HZ_14BIT
    assert reply.settings.get(SettingType.SAMPLE_RATE) == (130,)
    assert reply.settings.get(SettingType.RESOLUTION) == (14,)


def test_features_read() -> None:
    f = PmdFeatures.from_bytes(H("0f0500"))
    assert f.types == {MeasurementType.ECG, MeasurementType.ACC}
    assert f.supports(MeasurementType.ECG) and not f.supports(MeasurementType.PPG)
    with pytest.raises(MalformedControlPoint):
        PmdFeatures.from_bytes(H("f005"))


def test_every_error_code_has_a_clear_message() -> None:
    for code in ErrorCode:
        assert code in ERROR_MESSAGES
        msg = str(PmdRequestRefused("strap", Op.START, 0, code))
        assert error_message(code) in msg and f"(error {int(code)})" in msg
    assert len({ERROR_MESSAGES[c] for c in ErrorCode}) == len(ErrorCode)
    assert "unknown PMD error code 99" in error_message(99)
    assert "charger" in error_message(13) and "MTU" in error_message(10)


def ecg_frame_bytes(ts_ns: int, samples: list[int]) -> bytes:
    out = bytearray([0]) + ts_ns.to_bytes(8, "little") + bytearray([0])
    for s in samples:
        out += s.to_bytes(3, "little", signed=True)
    return bytes(out)


def test_ecg_frame_decoding() -> None:
    samples = [-98, -84, 1744, -1173, 8_388_607, -8_388_608] + [0] * 67
    data = ecg_frame_bytes(768_182_400_123_456_789, samples)
    assert len(data) == 229 == 232 - 3
    frame = EcgFrame.from_bytes(data)
    assert frame.timestamp_ns == 768_182_400_123_456_789
    assert frame.samples_uv == tuple(samples)
    assert bytes(frame) == data
    assert frame.unix_ns == 768_182_400_123_456_789 + 946_684_800 * 10**9
    assert ecg_samples_per_frame(232) == 73 and ecg_samples_per_frame(23) == 3


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "header"),
        (H("00") * 9, "header"),
        (H("02") + bytes(8) + H("01") + bytes(6), "ACC frame where ECG"),
        (H("00") + bytes(8) + H("80") + bytes(3), "frame type 128"),
        (H("00") + bytes(8) + H("00") + bytes(4), "int24"),
        (H("00") + bytes(8) + H("00"), r"no samples \(header only\)"),
    ],
)
def test_bad_ecg_frames(data: bytes, match: str) -> None:
    with pytest.raises(MalformedDataFrame, match=match):
        EcgFrame.from_bytes(data)


def test_an_ecg_frame_has_at_least_one_sample() -> None:
    """Its timestamp is that of its last sample: without samples it means nothing."""
    with pytest.raises(ValueError, match="at least one sample"):
        EcgFrame(768_182_400_000_000_000, ())


@given(
    ts=st.integers(0, 2**64 - 1),
    samples=st.lists(st.integers(-(2**23), 2**23 - 1), min_size=1, max_size=80),
)
def test_ecg_frame_round_trip(ts: int, samples: list[int]) -> None:
    frame = EcgFrame(ts, tuple(samples))
    assert EcgFrame.from_bytes(bytes(frame)) == frame
    assert bytes(EcgFrame.from_bytes(ecg_frame_bytes(ts, samples))) == ecg_frame_bytes(ts, samples)


settings_strategy = st.lists(
    st.sampled_from(list(SettingType)).flatmap(
        lambda s: st.tuples(
            st.just(s),
            st.lists(st.integers(0, 2 ** (8 * _width(s)) - 1), max_size=4),
        )
    ),
    max_size=5,
).map(lambda items: PmdSettings(tuple((s, tuple(v)) for s, v in items)))


def _width(s: SettingType) -> int:
    from sensors.pmd import SETTING_VALUE_BYTES

    return SETTING_VALUE_BYTES[s]


@given(op=st.sampled_from(list(Op)), mtype=st.integers(0, 255), cfg=settings_strategy)
def test_command_round_trip(op: Op, mtype: int, cfg: PmdSettings) -> None:
    cmd = PmdCommand(op, mtype, cfg)
    assert PmdCommand.from_bytes(bytes(cmd)) == cmd


@given(
    op=st.integers(0, 255),
    mtype=st.integers(0, 255),
    error=st.integers(0, 255),
    more=st.none() | st.integers(0, 255),
    params=st.binary(max_size=20),
)
def test_response_round_trip(
    op: int, mtype: int, error: int, more: int | None, params: bytes
) -> None:
    if more is None:
        params = b""
    reply = PmdResponse(op, mtype, error, more, params)
    assert PmdResponse.from_bytes(bytes(reply)) == reply


@given(cfg=settings_strategy)
def test_settings_reply_round_trip(cfg: PmdSettings) -> None:
    reply = PmdResponse(Op.GET_SETTINGS, 0, 0, 0, bytes(cfg))
    assert PmdResponse.from_bytes(bytes(reply)).settings == cfg


# -- fuzzing: only typed DecodeErrors, never anything else ----------------------------------


def _decode_response_fully(data: bytes) -> object:
    reply = PmdResponse.from_bytes(data)
    return reply.settings if reply.op == Op.GET_SETTINGS and reply.ok else reply


DECODERS: dict[str, tuple[Callable[[bytes], object], type[DecodeError]]] = {
    "hrs": (HeartRateMeasurement.from_bytes, MalformedMeasurement),
    "features": (PmdFeatures.from_bytes, MalformedControlPoint),
    "command": (PmdCommand.from_bytes, MalformedControlPoint),
    "response": (_decode_response_fully, MalformedControlPoint),
    "settings": (PmdSettings.from_bytes, MalformedControlPoint),
    "data frame": (PmdDataFrame.from_bytes, MalformedDataFrame),
    "ecg frame": (EcgFrame.from_bytes, MalformedPmd),
}

SEEDS = [
    H("063c"),
    H("163c1104"),
    H("164e1b031203"),
    H("103b5304"),
    H("10495e039603"),
    H("144659035803"),
    H("018080"),
    H("090000ffff"),
    H("110000ffff7f80"),
    H("0f0500"),
    START_ECG,
    START_ACC,
    H("0300"),
    H("0100"),
    H("f00200000000"),
    H("f001000a"),
    H("f002000500"),
    H("f002000600"),
    SETTINGS_REPLY,
    ecg_frame_bytes(768_182_400_000_000_000, list(range(-36, 37)) * 1),
    ecg_frame_bytes(1, [-(2**23), 2**23 - 1]),
]


def _mutate(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        choice = rng.random()
        if choice < 0.3 and buf:
            buf[rng.randrange(len(buf))] = rng.randrange(256)  # byte flip
        elif choice < 0.45 and buf:
            i = rng.randrange(len(buf))
            buf[i] ^= 1 << rng.randrange(8)  # bit flip
        elif choice < 0.6 and buf:
            del buf[rng.randrange(len(buf)) :]  # truncate
        elif choice < 0.75:
            i = rng.randint(0, len(buf))
            buf[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 6)))  # insert
        elif choice < 0.85 and buf:
            i = rng.randrange(len(buf))
            del buf[i : i + rng.randint(1, 4)]  # delete
        else:
            buf[0:1] = bytes([rng.choice([0x00, 0x01, 0x02, 0x03, 0x0F, 0x10, 0x16, 0xF0, 0xFF])])
    return bytes(buf)


def test_fuzz_decoders_raise_only_typed_decode_errors() -> None:
    """≥ 100,000 random and mutated inputs, every decoder on each: only DecodeError subclasses."""
    rng = random.Random(20240505)
    inputs = 0
    outcomes = {name: [0, 0] for name in DECODERS}  # [decoded, refused]
    while inputs < 100_000:
        if inputs % 4 == 0:
            data = bytes(rng.randrange(256) for _ in range(rng.choice([0, 1, 2, 3, 5, 10, 40])))
        else:
            data = _mutate(rng, rng.choice(SEEDS))
        inputs += 1
        for name, (decode, expected) in DECODERS.items():
            try:
                decode(data)
            except expected:
                outcomes[name][1] += 1
            except Exception as exc:  # pragma: no cover - the failure we look for
                pytest.fail(f"{name} decoder raised {exc!r} on {data.hex()}")
            else:
                outcomes[name][0] += 1
    # The fuzzer must exercise both paths of every decoder, or it proves nothing.
    for name, (ok, refused) in outcomes.items():
        assert ok > 1000 and refused > 1000, (name, ok, refused)


@settings(max_examples=3000, deadline=None)
@given(data=st.binary(max_size=260))
def test_fuzz_structure_hypothesis(data: bytes) -> None:
    for name, (decode, expected) in DECODERS.items():
        try:
            decode(data)
        except expected:
            pass
        except Exception as exc:  # pragma: no cover
            pytest.fail(f"{name} decoder raised {exc!r} on {data.hex()}")


# -- the virtual strap's PMD, through the real stack -------------------------------------


@pytest.fixture
async def air() -> AsyncIterator[VirtualAir]:
    async with VirtualAir() as virtual_air:
        yield virtual_air


async def pmd_strap(air: VirtualAir, **config: Any) -> VirtualStrap:
    cfg = PmdConfig(ecg_uv=h10_ecg_uv(), **config)
    strap = VirtualStrap(air, [800.0] * 2000, speed=SPEED, pmd=cfg)
    await strap.start()
    return strap


class Collector:
    """A bleak notify callback keeping raw payloads."""

    def __init__(self) -> None:
        self.values: list[bytes] = []
        self.changed = asyncio.Event()

    def __call__(self, _char: BleakGATTCharacteristic, data: bytearray) -> None:
        self.values.append(bytes(data))
        self.changed.set()

    async def wait_count(self, n: int) -> None:
        while len(self.values) < n:
            self.changed.clear()
            await self.changed.wait()


async def test_session_streams_the_real_ecg_as_73_sample_frames(air: VirtualAir) -> None:
    async with asyncio.timeout(LIMIT_S):
        strap = await pmd_strap(air, unreliable_start_s=0.0)
        async with BleakClient(strap.address, **air.client_kwargs()) as client:
            assert client.mtu_size == 232
            async with PmdSession(client, sensor_id="h10") as pmd:
                assert pmd.features == PmdFeatures(0b101)
                assert await pmd.ecg_settings() == ECG_130HZ_14BIT
                await pmd.start_ecg()
                frames = []
                async for received in pmd.frames():
                    frames.append(received.frame)
                    if len(frames) == 6:
                        break
            assert pmd.malformed == 0
        assert strap.pmd is not None
        assert strap.pmd.requests == [H("0100"), START_ECG, H("0300")]
        assert strap.pmd.replies[:2] == [SETTINGS_REPLY, H("f00200000000")]
        assert strap.pmd.unclean_disconnects == []  # stopped before disconnecting
    ecg = h10_ecg_uv()
    for k, frame in enumerate(frames):
        assert frame.samples_uv == ecg[73 * k : 73 * (k + 1)]
        assert frame.timestamp_ns == DEFAULT_FIRST_TIMESTAMP_NS + round((73 * k + 72) * 1e9 / FS)
    gaps = np.diff([f.timestamp_ns for f in frames]) / 1e9
    assert gaps == pytest.approx(73 / FS, abs=1e-6)  # ≈ 0.5615 s


async def test_session_yields_ecg_derived_rr(air: VirtualAir) -> None:
    async with asyncio.timeout(LIMIT_S):
        strap = await pmd_strap(air)  # with behaviour 5 on: absurd start
        beats = []
        async with (
            BleakClient(strap.address, **air.client_kwargs()) as client,
            PmdSession(client) as pmd,
        ):
            await pmd.start_ecg()
            async for beat in pmd.ecg_beats():
                beats.append(beat)
                if beat.beat.t_s - DEFAULT_FIRST_TIMESTAMP_NS / 1e9 > 20:
                    break
    t0 = DEFAULT_FIRST_TIMESTAMP_NS / 1e9
    assert all(not b.plausible for b in beats if b.beat.t_s - t0 < 4.0)
    good = [b for b in beats if b.plausible]
    assert len(good) > 15
    assert all(273 <= (b.rr_ms or 0) <= 2000 for b in good)
    # a beat is never placed after the receipt of the frame that revealed it
    assert all(b.host_t_s <= b.recv_ts_s + 1e-9 for b in beats)


async def test_control_point_errors_through_the_stack(air: VirtualAir) -> None:
    async with asyncio.timeout(LIMIT_S):
        strap = await pmd_strap(air)
        async with (
            BleakClient(strap.address, **air.client_kwargs()) as client,
            PmdSession(client) as pmd,
        ):
            with pytest.raises(PmdRequestRefused, match="sample rate") as info:
                await pmd.start_ecg(PmdSettings.of(sample_rate=250, resolution=14))
            assert info.value.code == ErrorCode.INVALID_SAMPLE_RATE
            with pytest.raises(PmdRequestRefused, match="resolution"):
                await pmd.start_ecg(PmdSettings.of(sample_rate=130, resolution=16))
            with pytest.raises(PmdRequestRefused, match="invalid or missing settings"):
                await pmd.request(PmdCommand.start(MeasurementType.ECG, PmdSettings()))
            with pytest.raises(PmdRequestRefused, match="does not support"):
                await pmd.request(PmdCommand.get_settings(MeasurementType.ACC))
            with pytest.raises(PmdRequestRefused, match="measurement type"):
                await pmd.request(PmdCommand.get_settings(MeasurementType.PPG))
            with pytest.raises(PmdRequestRefused, match="already"):
                await pmd.stop_ecg()
            await pmd.start_ecg()
            with pytest.raises(PmdRequestRefused, match="already") as info:
                await pmd.start_ecg()
            assert info.value.code == ErrorCode.ALREADY_IN_STATE
        assert strap.pmd is not None
        assert H("f002000500") in strap.pmd.replies  # the real H10 reply, byte for byte
        assert strap.pmd.replies[-3:] == [H("f00200000000"), H("f002000600"), H("f003000000")]
        assert strap.pmd.unclean_disconnects == []


async def test_strap_without_pmd_is_refused_clearly(air: VirtualAir) -> None:
    async with asyncio.timeout(LIMIT_S):
        strap = VirtualStrap(air, [800.0] * 100, speed=SPEED)
        await strap.start()
        async with BleakClient(strap.address, **air.client_kwargs()) as client:
            with pytest.raises(PmdUnavailable, match="no Polar PMD service"):
                await PmdSession(client).open()


# behaviour 1: indications before writes


async def _raw_start_without_indications(air: VirtualAir, strap: VirtualStrap) -> Collector:
    data = Collector()
    async with BleakClient(strap.address, **air.client_kwargs()) as client:
        await client.start_notify(PMD_DATA_UUID, data)
        await client.write_gatt_char(PMD_CONTROL_POINT_UUID, START_ECG, response=True)
        await asyncio.sleep(3 * 0.5615 / SPEED + 0.05)  # room for 3+ frames
    return data


async def test_b1_no_reply_without_indications(air: VirtualAir) -> None:
    async with asyncio.timeout(LIMIT_S):
        strap = await pmd_strap(air)
        data = await _raw_start_without_indications(air, strap)
        assert strap.pmd is not None
        assert strap.pmd.ignored_requests == 1 and strap.pmd.replies == []
        assert data.values == [] and strap.pmd.streams_started == 0
        # our session enables indications first, so the same strap serves it
        async with BleakClient(strap.address, **air.client_kwargs()) as client:
            session = PmdSession(client, reply_timeout_s=1.0)
            async with session:
                await session.start_ecg()
        assert strap.pmd.streams_started == 1


async def test_b1_off_serves_requests_without_indications(air: VirtualAir) -> None:
    async with asyncio.timeout(LIMIT_S):
        strap = await pmd_strap(air, require_indications=False)
        data = await _raw_start_without_indications(air, strap)
        assert strap.pmd is not None
        assert strap.pmd.ignored_requests == 0 and strap.pmd.replies == [H("f00200000000")]
        assert len(data.values) >= 3


async def test_b1_session_times_out_clearly_when_no_reply_comes(air: VirtualAir) -> None:
    """A strap that ignores the request (as H10 does without indications) → PmdNoReply."""
    async with asyncio.timeout(LIMIT_S):
        strap = await pmd_strap(air)
        async with BleakClient(strap.address, **air.client_kwargs()) as client:
            session = PmdSession(client, reply_timeout_s=0.2)
            await session.open()
            await client.stop_notify(PMD_CONTROL_POINT_UUID)  # indications off behind its back
            with pytest.raises(PmdNoReply, match=r"no reply to PMD START within 0\.2 s"):
                await session.start_ecg()
            await session.close()


# behaviour 2: MTU


async def test_b2_small_mtu_is_refused_by_the_strap_and_said_plainly(air: VirtualAir) -> None:
    """At a real MTU of 23 the session still asks (it cannot trust ``mtu_size``, see the next
    test): the strap's INVALID MTU (real bytes) becomes one clear error, nothing streams."""
    async with asyncio.timeout(LIMIT_S):
        strap = await pmd_strap(air)
        async with BleakClient(strap.address, **air.client_kwargs(), mtu=None) as client:
            assert client.mtu_size == 23
            async with PmdSession(client, sensor_id="h10") as pmd:
                with pytest.raises(PmdRequestRefused, match="ATT MTU too small") as info:
                    await pmd.start_ecg()
                assert info.value.code == ErrorCode.INVALID_MTU
                assert "at least 232 bytes" in str(info.value)
                assert not pmd.streaming
        assert strap.pmd is not None
        assert strap.pmd.replies[0] == H("f002000a")  # the H10's answer at MTU 23
        assert strap.pmd.streams_started == 0


async def test_ecg_streams_when_the_stack_reports_mtu_23_like_bluez(air: VirtualAir) -> None:
    """bleak's BlueZ backend reports ``mtu_size == 23`` whatever BlueZ negotiated (bleak's
    docs; the real MTU needs its private ``_acquire_mtu()``). Raw ECG used to be refused on
    every Linux connection; the strap itself is the judge, and here it streams."""
    async with asyncio.timeout(LIMIT_S):
        strap = await pmd_strap(air, unreliable_start_s=0.0)
        kw = air.client_kwargs()
        async with BleakClient(strap.address, **kw, reported_mtu=23) as client:
            assert client.mtu_size == 23  # while the link really runs at 232
            async with PmdSession(client, sensor_id="h10") as pmd:
                await pmd.start_ecg()
                frames = []
                async for received in pmd.frames():
                    frames.append(received.frame)
                    if len(frames) == 3:
                        break
    assert [f.samples_uv for f in frames] == [h10_ecg_uv()[73 * k : 73 * (k + 1)] for k in range(3)]


async def test_b2_off_streams_smaller_frames_at_small_mtu(air: VirtualAir) -> None:
    async with asyncio.timeout(LIMIT_S):
        strap = await pmd_strap(air, min_mtu=None, unreliable_start_s=0.0)
        replies, data = Collector(), Collector()
        async with BleakClient(strap.address, **air.client_kwargs(), mtu=None) as client:
            await client.start_notify(PMD_CONTROL_POINT_UUID, replies)
            await client.start_notify(PMD_DATA_UUID, data)
            await client.write_gatt_char(PMD_CONTROL_POINT_UUID, START_ECG, response=True)
            await data.wait_count(4)
            await client.write_gatt_char(PMD_CONTROL_POINT_UUID, H("0300"), response=True)
            await replies.wait_count(2)
        assert replies.values == [H("f00200000000"), H("f003000000")]
        frames = [EcgFrame.from_bytes(v) for v in data.values[:4]]
        assert [len(f.samples_uv) for f in frames] == [3, 3, 3, 3]
        assert sum((f.samples_uv for f in frames), ()) == h10_ecg_uv()[:12]


# behaviour 3: one central


async def _phone_connects(air: VirtualAir, strap: VirtualStrap) -> None:
    phone = air.create_device("phone", "F0:5E:77:1E:99:99")
    await phone.power_on()
    await phone.connect(hci.Address(strap.address), timeout=2.0)


async def test_b3_a_phone_holding_the_strap_blocks_a_second_central(air: VirtualAir) -> None:
    async with asyncio.timeout(LIMIT_S):
        strap = await pmd_strap(air)
        await _phone_connects(air, strap)
        client = BleakClient(strap.address, **air.client_kwargs(), timeout=0.3)
        with pytest.raises(BleakDeviceNotFoundError):
            await client.connect()
        assert strap.connections_accepted == 1


async def test_b3_off_dual_connection_lets_the_daemon_stream_too(air: VirtualAir) -> None:
    async with asyncio.timeout(LIMIT_S):
        strap = await pmd_strap(air, max_centrals=2)
        await _phone_connects(air, strap)
        async with (
            BleakClient(strap.address, **air.client_kwargs(), timeout=2.0) as client,
            PmdSession(client) as pmd,
        ):
            await pmd.start_ecg()
            async for _ in pmd.frames():
                break
        assert strap.connections_accepted == 2


# behaviour 4: stop before disconnect


async def _disconnect_while_streaming(air: VirtualAir, strap: VirtualStrap) -> None:
    async with BleakClient(strap.address, **air.client_kwargs()) as client:
        session = PmdSession(client)
        await session.open()
        await session.start_ecg()
        async for _ in session.frames():
            break
        # no session.close(): the link goes down with the stream running
    await asyncio.sleep(0.05)


async def test_b4_disconnect_while_streaming_is_flagged(air: VirtualAir) -> None:
    async with asyncio.timeout(LIMIT_S):
        strap = await pmd_strap(air)
        await _disconnect_while_streaming(air, strap)
        assert strap.pmd is not None
        assert strap.pmd.unclean_disconnects == [CENTRAL_ADDRESS]
        assert not strap.pmd.streaming
        # the clean path (session as a context manager) is not flagged
        async with (
            BleakClient(strap.address, **air.client_kwargs()) as client,
            PmdSession(client) as pmd,
        ):
            await pmd.start_ecg()
        assert strap.pmd.unclean_disconnects == [CENTRAL_ADDRESS]
        assert strap.pmd.requests[-1] == H("0300")


async def test_b4_off_is_not_tracked(air: VirtualAir) -> None:
    async with asyncio.timeout(LIMIT_S):
        strap = await pmd_strap(air, track_unclean_disconnects=False)
        await _disconnect_while_streaming(air, strap)
        assert strap.pmd is not None and strap.pmd.unclean_disconnects == []


# behaviour 5: unreliable first seconds


async def _first_frames(air: VirtualAir, n: int, **config: Any) -> list[EcgFrame]:
    strap = await pmd_strap(air, **config)
    frames: list[EcgFrame] = []
    async with (
        BleakClient(strap.address, **air.client_kwargs()) as client,
        PmdSession(client) as pmd,
    ):
        await pmd.start_ecg()
        async for received in pmd.frames():
            frames.append(received.frame)
            if len(frames) == n:
                break
    return frames


async def test_b5_first_seconds_carry_absurd_values(air: VirtualAir) -> None:
    async with asyncio.timeout(LIMIT_S):
        frames = await _first_frames(air, 10)  # 5.6 simulated s
    ecg = h10_ecg_uv()
    first = [s for f in frames[:6] for s in f.samples_uv]  # 0–3.4 s
    assert max(abs(s) for s in first) > 5_000_000
    assert np.mean(np.abs(first)) > 5_000
    assert frames[7].samples_uv == ecg[7 * 73 : 8 * 73]  # from 3.9 s on: the recording


async def test_b5_off_replays_the_recording_from_the_first_sample(air: VirtualAir) -> None:
    async with asyncio.timeout(LIMIT_S):
        frames = await _first_frames(air, 2, unreliable_start_s=0.0)
    assert frames[0].samples_uv == h10_ecg_uv()[:73]


def test_pmd_config_is_validated() -> None:
    with pytest.raises(ValueError):
        PmdConfig(ecg_uv=())
    with pytest.raises(ValueError):
        PmdConfig(ecg_uv=(1,), max_centrals=3)


async def test_session_reports_a_dropped_link(air: VirtualAir) -> None:
    async with asyncio.timeout(LIMIT_S):
        strap = await pmd_strap(air)
        async with BleakClient(strap.address, **air.client_kwargs()) as client:
            pmd = PmdSession(client, stall_timeout_s=0.2)
            await pmd.open()
            await pmd.start_ecg()
            async for _ in pmd.frames():
                break
            strap.lose_link()
            with pytest.raises(SensorError, match="disconnected"):
                async for _ in pmd.frames():
                    pass
            await pmd.close()  # must not raise on a dead link
