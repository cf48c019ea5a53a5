"""What a practitioner sees about the strap itself during a long session, through the real
(virtual) Bluetooth stack: malformed notifications are reported in the log (not only at
DEBUG) while every good beat is stored; the battery level follows the strap's notifications;
a strap keeps its device id when the Bluetooth stack reports its name only later."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import pytest
from bleak.backends.device import BLEDevice
from bleak.exc import BleakError

from sensors.hrs import HEART_RATE_MEASUREMENT_UUID, HeartRateMeasurement
from sensors.strap import StrapClient
from sensors.virtual.air import VirtualAir
from sensors.virtual.backend import BumbleBleakClient
from sensors.virtual.model import ModelParams, PhysioModel
from sensors.virtual.strap import VirtualStrap
from sessions.store import SessionStore
from settle.config import load_config
from settle.daemon import Daemon
from settle.errors import SensorError
from tests.test_e2e import CONFIG
from tests.test_reconnect import client_for, json_tap, model_daemon, until

# An empty packet, a truncated HR value, EE flagged but cut short, a u16 HR cut short, two
# trailing bytes without RR, and 20 zero bytes (flags 0 with 19 trailing bytes). One stray
# byte is not malformed (test_a_stray_trailing_byte_keeps_the_beats_and_is_warned_about).
MALFORMED = [b"", b"\x10", b"\x18\x48\x01", b"\x19\x48", b"\x00\x48\xff\xff", bytes(20)]


async def test_malformed_notifications_are_warned_about_and_no_good_beat_is_lost(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="sensors.strap")
    async with model_daemon(tmp_path, seed=3, speed=20) as (daemon, store, strap, task):
        rt = daemon.runtimes[0]
        await until(lambda: rt.session is not None and rt.session.seq > 30)
        for bad in MALFORMED:
            for conn in list(strap._subscribed):
                await strap._device.notify_subscriber(conn, strap._hrm, bad)
            await asyncio.sleep(0.05)
        assert rt.session is not None
        n0 = rt.session.seq
        await until(lambda: rt.session is not None and rt.session.seq > n0 + 30)
        warned = [r.getMessage() for r in caplog.records if r.name == "sensors.strap"]
        # One line at once (not one per packet), naming the strap and the cause.
        assert len(warned) == 1, warned
        assert warned[0].startswith(f"{rt.device_id}: 1 malformed heart-rate notification ")
        assert "latest: empty payload" in warned[0]
        # Every beat notified before the stop is stored, except those of a notification
        # still on its way (CI, loaded: the last one, sent as the stop came, was not read).
        notified = [r for m in strap.sent[:-1] for r in m.rr_raw]
        daemon.stop()
        await asyncio.wait_for(task, 10)
        (session,) = store.list_sessions()
        stored = [b.rr_raw for b in store.beats(session.id)]
    warned = [r.getMessage() for r in caplog.records if r.name == "sensors.strap"]
    # The rest is reported when the link closes; the bytes themselves never are.
    assert len(warned) == 2 and "5 malformed heart-rate notifications dropped" in warned[1]
    assert "6 in all" in warned[1] and "ff" not in warned[1].split("(latest")[0]
    assert rt.client.malformed == 6
    assert stored == [r for m in strap.sent for r in m.rr_raw][: len(stored)]  # in order
    assert len(stored) >= len(notified) > 60


async def test_a_stray_trailing_byte_keeps_the_beats_and_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``10482c03ff`` (HR 72, RR 812/1024 s, then one stray byte) and ``0048ff`` (HR 72 and
    a stray byte) were dropped as malformed: their heart rate and RR were lost, and the lost
    RR left a timing gap. Now the RR is stored in its place and the byte warned about as
    dropped packets are: one line at once, the rest when the link closes; the strap's MQTT
    status counts them (``stray_bytes``) beside ``malformed``, as it counts dropped ones."""
    caplog.set_level(logging.WARNING, logger="sensors.strap")
    statuses, tap = json_tap("/status")
    async with model_daemon(tmp_path, seed=3, speed=20, tap=tap) as (daemon, store, strap, task):
        rt = daemon.runtimes[0]
        await until(lambda: rt.session is not None and rt.session.seq > 30)
        for stray in (bytes.fromhex("10482c03ff"), bytes.fromhex("0048ff")):
            for conn in list(strap._subscribed):
                await strap._device.notify_subscriber(conn, strap._hrm, stray)
            await asyncio.sleep(0.05)
        assert rt.session is not None
        n0 = rt.session.seq
        await until(lambda: rt.session is not None and rt.session.seq > n0 + 10)
        warned = [r.getMessage() for r in caplog.records if r.name == "sensors.strap"]
        assert warned == [
            f"{rt.device_id}: 1 stray trailing byte ignored in heart-rate notifications since "
            "the last warning, 1 in all (latest: one byte after the RR intervals); their heart "
            "rate and whole RR intervals were kept"
        ]
        daemon.stop()
        await asyncio.wait_for(task, 10)
        (session,) = store.list_sessions()
        stored = [b.rr_raw for b in store.beats(session.id)]
    warned = [r.getMessage() for r in caplog.records if r.name == "sensors.strap"]
    assert len(warned) == 2 and "2 in all (latest: one byte after the heart rate)" in warned[1]
    assert rt.client.malformed == 0 and rt.client.stray_bytes.total == 2
    assert statuses[0]["stray_bytes"] == 0
    final = statuses[-1]
    assert (final["state"], final["stray_bytes"], final["malformed"]) == ("stopped", 2, 0)
    # The strap's own beats in order, with the 812 of the stray-byte packet where it came.
    sent = [r for m in strap.sent for r in m.rr_raw]
    at = next(i for i, (a, b) in enumerate(zip(stored, sent, strict=False)) if a != b)
    assert at > 30 and stored[at] == 812
    assert stored[:at] + stored[at + 1 :] == sent[: len(stored) - 1]


async def test_the_status_follows_the_straps_battery_notifications(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="settle.daemon")
    statuses, tap = json_tap("/status")
    async with model_daemon(tmp_path, seed=4, speed=20, tap=tap) as (daemon, _s, strap, _t):
        rt = daemon.runtimes[0]
        await until(lambda: rt.session is not None and rt.session.seq > 10)
        assert statuses[-1]["battery_pct"] == 87  # read on connect
        await strap.set_battery_pct(9)
        await until(lambda: statuses[-1]["battery_pct"] == 9, 10)
        await strap.set_battery_pct(8)
        await until(lambda: statuses[-1]["battery_pct"] == 8, 10)
    low = [r.getMessage() for r in caplog.records if "battery low" in r.getMessage()]
    assert low == [f"{rt.device_id}: strap battery low (9 %)"]  # once per fall, not per step


class NameLearntLater(StrapClient):
    """As bleak on BlueZ: the device is reported without a name until BlueZ has learnt it
    (``device_name_from_props``), or under the alias a user gave it."""

    found = 0

    async def find(self) -> BLEDevice:
        device = await super().find()
        self.found += 1
        return BLEDevice(device.address, None if self.found == 1 else device.name, device.details)


async def test_a_strap_keeps_its_device_id_when_its_name_is_learnt_later(
    tmp_path: Path,
) -> None:
    settings = load_config(CONFIG, mqtt={"enabled": False}, storage={"db_path": tmp_path / "s.db"})
    topics: set[str] = set()
    async with VirtualAir() as air:
        strap = VirtualStrap(
            air, PhysioModel(ModelParams(), seed=3), speed=20, name="Polar H10 1A2B3C4D"
        )
        await strap.start()
        client = client_for(air, strap, NameLearntLater)
        with SessionStore.open(settings.db_path) as store:
            daemon = Daemon(
                settings, store, [client], time_scale=20,
                tap=lambda t, _p, _r: topics.add(t.split("/")[1]),
            )  # fmt: skip
            task = asyncio.create_task(daemon.run())
            rt = daemon.runtimes[0]
            await until(lambda: rt.session is not None and rt.session.seq > 20)
            first = rt.device_id
            strap.lose_link()
            await until(lambda: rt.reconnects == 1 and rt.state == "streaming")
            assert rt.session is not None
            n0 = rt.session.seq
            await until(lambda: rt.session is not None and rt.session.seq > n0 + 10)
            # Commands sent to the id the strap was published under still reach it.
            assert rt.device_id == first and daemon._runtime(first) is rt
            daemon.stop()
            await asyncio.wait_for(task, 10)
            (session,) = store.list_sessions()
        await strap.stop()
    assert first is not None and first.startswith("polar_h10_1a2b3c4d_")  # as `settle scan`
    assert session.device_id == first and topics - {"bridge"} == {first}


async def test_a_paired_strap_left_at_home_is_warned_about_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A coach's three paired straps, one not brought today: the daemon keeps looking for it
    (it may arrive late), but one WARNING says so — not one every scan for the whole day."""
    caplog.set_level(logging.WARNING, logger="settle.daemon")
    settings = load_config(CONFIG, mqtt={"enabled": False}, storage={"db_path": tmp_path / "s.db"})
    async with VirtualAir() as air:
        strap = VirtualStrap(air, PhysioModel(ModelParams(), seed=5), speed=20)
        await strap.start()
        here = client_for(air, strap)
        absent = client_for(air, "C0:5E:77:1E:FF:FE", scan_timeout_s=0.5)
        with SessionStore.open(settings.db_path) as store:
            daemon = Daemon(settings, store, [here, absent], time_scale=20)
            task = asyncio.create_task(daemon.run())
            try:
                away = daemon.runtimes[1]
                await until(lambda: daemon.runtimes[0].state == "streaming")
                await asyncio.sleep(5.0)  # several scans for the absent strap
                assert away.state in ("scanning", "backoff") and away.last_error is not None
                assert "no strap offering the Heart Rate Service" in away.last_error
            finally:
                daemon.stop()
                await asyncio.wait_for(task, 10)
        await strap.stop()
    lines = [r.getMessage() for r in caplog.records if "C0:5E:77:1E:FF:FE" in r.getMessage()]
    assert len(lines) == 1, lines
    assert "retrying (a repeat is not logged again)" in lines[0]


class _RefusesLink(BumbleBleakClient):
    """A strap that advertises but whose link fails with an exception that has no text:
    bumble's own connect timing out (``TimeoutError()``), or a bare ``BleakError()``."""

    error: BaseException = TimeoutError()

    async def connect(self, pair: bool, **kwargs: Any) -> None:
        raise self.error


@pytest.mark.parametrize(
    ("error", "said"),
    [(TimeoutError(), "(no answer within 5 s)"), (BleakError(), "(BleakError)")],
)
async def test_a_strap_found_but_not_connected_is_said_as_it_happened(
    error: BaseException, said: str
) -> None:
    async with VirtualAir() as air:
        strap = VirtualStrap(air, PhysioModel(ModelParams(), seed=6), speed=20)
        await strap.start()
        _RefusesLink.error = error
        client = client_for(air, strap, backend=_RefusesLink)
        device = await client.find()
        with pytest.raises(SensorError) as caught:
            async with client.connect(device):
                pass
        await strap.stop()
    line = str(caught.value)
    assert line.startswith(f"{strap.address}: found but could not connect {said} — ")
    assert "()" not in line
    # It advertised, so it is awake: "wet the electrodes so it wakes up" would mislead.
    assert "wet electrodes" not in line and "no phone or watch holds its connection" in line


async def test_a_battery_level_over_100_is_never_shown(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Battery Level is a uint8: a strap can send 255. Neither the level read on connect nor
    a notified one may show as "255 %" in the status (the notified ones were checked; the
    one read on connect was not)."""
    caplog.set_level(logging.WARNING, logger="sensors.strap")
    statuses, tap = json_tap("/status")
    settings = load_config(CONFIG, mqtt={"enabled": False}, storage={"db_path": tmp_path / "s.db"})
    async with VirtualAir() as air:
        strap = VirtualStrap(air, PhysioModel(ModelParams(), seed=7), speed=20)
        strap._battery_pct = 255  # what its GATT server answers to a read
        await strap.start()
        with SessionStore.open(settings.db_path) as store:
            daemon = Daemon(settings, store, [client_for(air, strap)], time_scale=20, tap=tap)
            task = asyncio.create_task(daemon.run())
            try:
                rt = daemon.runtimes[0]
                await until(lambda: rt.session is not None and rt.session.seq > 5)
                assert statuses and statuses[-1]["battery_pct"] is None
                for conn in list(strap._connections):
                    await strap._device.notify_subscriber(conn, strap._battery, bytes([200]))
                    # A malformed heart-rate packet behind it: once it is counted, the 200
                    # has been handled too (one link, in order); the status then says so.
                    await strap._device.notify_subscriber(conn, strap._hrm, b"")
                await until(lambda: rt.client.malformed == 1, 10)
                # The daemon takes a new level with the next beats: let some come first.
                n0 = rt.session.seq if rt.session else 0
                await until(lambda: rt.session is not None and rt.session.seq > n0 + 2, 10)
                daemon.publish_status_all()
                assert statuses[-1]["battery_pct"] is None
                await strap.set_battery_pct(40)
                await until(lambda: statuses[-1]["battery_pct"] == 40, 10)
            finally:
                daemon.stop()
                await asyncio.wait_for(task, 10)
        await strap.stop()
    assert all(s["battery_pct"] in (None, 40) for s in statuses), statuses
    warned = [r.getMessage() for r in caplog.records if "battery level" in r.getMessage()]
    assert warned == [f"{strap.address}: battery level 255 % reported (over 100); not shown"]


async def test_notifications_dropped_by_a_reader_that_fell_behind_are_warned_about(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A reader that stops reading (a stalled event loop, a blocked store thread) loses the
    oldest notifications of the bounded buffer: counted in the status, and now said in the
    log — one WARNING at once, the rest when the link closes, including those dropped while
    it was being closed (a slow stack's stop_notify: the closing line said 5 of 20)."""

    class SlowStop(BumbleBleakClient):
        async def stop_notify(self, *args: Any, **kwargs: Any) -> None:
            await asyncio.sleep(0.3)  # a D-Bus round trip: notifications keep coming
            await super().stop_notify(*args, **kwargs)

    caplog.set_level(logging.WARNING, logger="sensors.strap")
    async with VirtualAir() as air:
        strap = VirtualStrap(air, PhysioModel(ModelParams(), seed=8), speed=50)
        await strap.start()
        client = client_for(air, strap, backend=SlowStop, buffer_size=4)
        async with client.connect(await client.find()) as stream:
            await until(lambda: client.overflowed >= 5)  # nothing reads the stream
            warned = [r.getMessage() for r in caplog.records if r.name == "sensors.strap"]
            device_id = stream.info.device_id
        await strap.stop()
    assert warned == [
        f"{device_id}: 1 heart-rate notification dropped (the reader fell behind) since the last "
        "warning, 1 in all (latest: over 4 notifications waiting to be read); their beats are "
        "missing from the session"
    ]
    closing = [r.getMessage() for r in caplog.records if r.name == "sensors.strap"][1:]
    assert client.overflowed > 5  # some while the link was closed
    assert len(closing) == 1 and f"{client.overflowed} in all" in closing[0]


def _gated_backend() -> type[BumbleBleakClient]:
    """A virtual Bluetooth stack whose heart-rate notifications the test can hold back (and
    deliver in one burst at :meth:`release`) or lose, the link staying up throughout."""

    class Gated(BumbleBleakClient):
        mode: str | None = None
        """None: deliver; "hold": keep until :meth:`release`; "lose": drop."""
        waiting: ClassVar[list[tuple[Callable[[bytearray], None], bytearray]]] = []
        beats_delivered = 0
        beats_held = 0
        beats_lost = 0

        @classmethod
        def release(cls) -> None:
            cls.mode = None
            burst, cls.waiting[:] = list(cls.waiting), []
            for callback, data in burst:
                callback(data)  # one after the other, at once: a stack's backlog

        async def start_notify(
            self, characteristic: Any, callback: Callable[[bytearray], None], **kwargs: Any
        ) -> None:
            if characteristic.uuid != HEART_RATE_MEASUREMENT_UUID:
                await super().start_notify(characteristic, callback, **kwargs)
                return
            cls = type(self)

            def gate(data: bytearray) -> None:
                n_rr = len(HeartRateMeasurement.from_bytes(bytes(data)).rr_raw)
                if cls.mode == "hold":
                    cls.beats_held += n_rr
                    cls.waiting.append((callback, data))
                elif cls.mode == "lose":
                    cls.beats_lost += n_rr
                else:
                    cls.beats_delivered += n_rr
                    callback(data)

            await super().start_notify(characteristic, gate, **kwargs)

    return Gated


@pytest.mark.parametrize("mode", ["hold", "lose"])
async def test_notifications_held_back_by_the_stack_are_no_gap_but_lost_ones_are(
    tmp_path: Path, mode: str
) -> None:
    """The host's Bluetooth stack holds the strap's notifications back for 15 s of session
    time (1.5 s at speed 10), then delivers them in one burst, nothing lost: the daemon read
    the first late one as "beats missing", recorded a gap and stored the held beats piled
    onto the burst's arrival, flagged. Now they are stored on their RR, no gap, and every
    notification's beat message carries its own beats' times. Lost instead (the strap out
    of range, the link kept), they are still a gap as long as the loss."""
    speed = 10.0
    gated = _gated_backend()
    beats, tap = json_tap("/beat")
    settings = load_config(CONFIG, mqtt={"enabled": False}, storage={"db_path": tmp_path / "s.db"})
    async with VirtualAir() as air:
        strap = VirtualStrap(air, PhysioModel(ModelParams(), seed=5), speed=speed)
        await strap.start()
        with SessionStore.open(settings.db_path) as store:
            client = client_for(air, strap, backend=gated)
            daemon = Daemon(settings, store, [client], time_scale=speed, tap=tap)
            task = asyncio.create_task(daemon.run())
            rt = daemon.runtimes[0]
            await until(lambda: rt.session is not None and rt.session.seq > 40)
            first = gated.beats_delivered
            gated.mode = mode
            await asyncio.sleep(15 / speed)
            gated.release()
            after = gated.beats_delivered + gated.beats_held
            await until(lambda: gated.beats_delivered > after + 20)
            daemon.stop()
            await asyncio.wait_for(task, 10)
            (session,) = store.list_sessions()
            stored = store.beats(session.id)
            gaps = store.gaps(session.id)
        await strap.stop()
    sent = [r for m in strap.sent for r in m.rr_raw]
    if mode == "hold":
        assert gaps == []
        assert gated.beats_held >= 10 and gated.beats_lost == 0
        assert [b.rr_raw for b in stored] == sent[: len(stored)]  # every beat, once, in order
        held = stored[first - 1 : first + gated.beats_held]
        # The held beats are as far apart as their RR say (they were 1 µs apart), unflagged.
        for a, b in itertools.pairwise(held):
            assert b.beat_t_s - a.beat_t_s == pytest.approx(b.rr_ms / 1000, abs=0.005)
        assert not any(b.timing_uncertain for b in held[1:])
    else:
        assert gated.beats_lost >= 10 and gated.beats_held == 0
        (gap,) = gaps
        assert gap.reason.startswith("beats missing")
        assert gap.end_t_s - gap.start_t_s == pytest.approx(15.0, abs=2.5)
        kept = sent[:first] + sent[first + gated.beats_lost :]
        assert [b.rr_raw for b in stored] == kept[: len(stored)]
        assert stored[first].beat_t_s - stored[first - 1].beat_t_s > 12.0  # not joined up
    # One beat message per notification, its times beside its intervals, and together
    # every stored beat.
    mine = [m for m in beats if m["session"] == session.id]
    assert all(len(m["beat_t_s"]) == len(m["rr_ms"]) for m in mine)
    assert [m["seq"] for m in beats] == list(range(len(beats)))
    in_messages = [t for m in mine for t in m["beat_t_s"]]
    assert in_messages == [round(b.beat_t_s, 4) for b in stored]
