"""Broker security against a real mosquitto: TLS with a certificate generated here, password
authentication, and an ACL under which a dashboard user may only read data and send commands."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import logging
import subprocess
from pathlib import Path

import aiomqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from feedback.mqtt import ConnectOptions, MqttLink
from feedback.payloads import COMMANDS
from settle.app import connect_options, serve
from settle.config import load_config
from settle.demo import virtual_world
from settle.errors import ConfigError
from tests.conftest import Mosquitto, start_mosquitto
from tests.test_e2e import CONFIG

pytestmark = pytest.mark.mosquitto

DAEMON_PW = "s3cret-daemon-pw"
DASH_PW = "dash-pw-123"


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def make_certs(d: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 / localhost, valid for one day."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Settle test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_file, cert_file, key_file = d / "ca.pem", d / "server.pem", d / "server.key"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key, key_file)
    return ca_file, cert_file, key_file


@pytest.fixture
def secured_broker(tmp_path: Path) -> tuple[Mosquitto, Path]:
    ca, cert, key = make_certs(tmp_path)
    pw = tmp_path / "passwd"
    pw.touch(mode=0o600)
    for user, password in [("settle", DAEMON_PW), ("dashboard", DASH_PW)]:
        subprocess.run(["mosquitto_passwd", "-b", str(pw), user, password], check=True)
    acl = tmp_path / "acl"
    acl.write_text(
        "user settle\ntopic readwrite settle/#\ntopic readwrite homeassistant/#\n\n"
        "user dashboard\ntopic read settle/#\n"
        # As docs/mqtt.md: write per command (cmd/# would let it forge results too).
        + "".join(f"topic write settle/+/cmd/{c}\n" for c in COMMANDS)
    )
    broker = start_mosquitto(
        tmp_path,
        extra_conf=(
            f"cafile {ca}\ncertfile {cert}\nkeyfile {key}\npassword_file {pw}\nacl_file {acl}\n"
        ).replace("allow_anonymous true\n", ""),
        anonymous=False,
    )
    try:
        yield broker, ca
    finally:
        broker.stop()


async def test_tls_auth_and_acl(
    secured_broker: tuple[Mosquitto, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broker, ca = secured_broker
    pw_file = tmp_path / "pw"
    pw_file.write_text(DAEMON_PW + "\n")
    world_readable = load_config(CONFIG, mqtt={"password_file": pw_file})
    pw_file.chmod(0o644)  # a secret every account on the machine can read: refused
    with pytest.raises(ConfigError, match="is readable by every account"):
        world_readable.mqtt.password_value()
    pw_file.chmod(0o600)
    settings = load_config(
        CONFIG,
        mqtt={
            "host": "127.0.0.1", "port": broker.port, "tls": True, "ca_file": ca,
            "username": "settle", "password_file": pw_file,
        },
        storage={"db_path": tmp_path / "s.db"},
    )  # fmt: skip
    dash = ConnectOptions("127.0.0.1", broker.port, "dashboard", DASH_PW, tls=True,
                          ca_file=str(ca), mqtt5=True)  # fmt: skip
    seen: list[tuple[str, bytes]] = []
    caplog.set_level(logging.DEBUG)

    async with virtual_world(replay=None, speed=10, seed=4) as world:
        task = asyncio.create_task(
            serve(
                settings,
                **world.serve_kwargs(),
                duration=6,
                handle_signals=False,
            )
        )
        async with aiomqtt.Client(**dash.client_kwargs(), identifier="dash") as c:
            await c.subscribe("settle/#", qos=1)
            dev = None
            async with asyncio.timeout(15):
                async for m in c.messages:
                    seen.append((str(m.topic), bytes(m.payload)))  # type: ignore[arg-type]
                    if str(m.topic).endswith("/session"):
                        dev = str(m.topic).split("/")[1]
                    if dev and str(m.topic).endswith("/beat"):
                        break
            # Forbidden for the dashboard: forging data. Allowed: commands.
            await c.publish(f"settle/{dev}/indices", b'{"forged":true}', qos=1)
            await c.publish(f"settle/{dev}/cmd/marker", json.dumps({"id": "d1", "kind": "doubt"}))
            async with asyncio.timeout(10):
                async for m in c.messages:
                    seen.append((str(m.topic), bytes(m.payload)))  # type: ignore[arg-type]
                    if str(m.topic).endswith("/cmd/marker/result"):
                        break
        assert await task == 0

    assert all(b"forged" not in p for _, p in seen)
    result = json.loads(next(p for t, p in seen if t.endswith("/cmd/marker/result")))
    assert (result["id"], result["status"]) == ("d1", "ok")
    assert any(t.endswith("/beat") for t, _ in seen)  # the daemon's data arrived over TLS
    assert DAEMON_PW not in caplog.text  # the secret never reaches a log
    assert DAEMON_PW not in repr(connect_options(settings))


async def test_wrong_password_and_untrusted_certificate_are_refused(
    secured_broker: tuple[Mosquitto, Path],
) -> None:
    broker, ca = secured_broker
    bad_pw = ConnectOptions("127.0.0.1", broker.port, "settle", "wrong", tls=True, ca_file=str(ca))
    no_ca = ConnectOptions("127.0.0.1", broker.port, "settle", DAEMON_PW, tls=True)  # system CAs
    for options, words in [(bad_pw, "not authori"), (no_ca, "certificate verify failed")]:
        async with MqttLink(options, backoff_cap_s=0.2) as link:
            assert not await link.wait_connected(2)
            assert link.last_error is not None
            assert words in link.last_error.lower(), link.last_error
            link.publish("settle/x/beat", b"1")  # measuring goes on; nothing blocks


async def test_a_daemon_whose_account_may_not_publish_says_so(
    secured_broker: tuple[Mosquitto, Path], caplog: pytest.LogCaptureFixture
) -> None:
    """The daemon configured with an account the broker's ACL lets read but not publish (here
    the dashboard's): over MQTT 5 mosquitto answers each publish "Not authorized", but
    aiomqtt's publish() returns None all the same, and the daemon ran on, looking healthy,
    while nobody received anything. Now it says so: one WARNING naming the account, the
    topic and the reason (then at most one a minute), and ``denied`` counts them."""
    broker, ca = secured_broker
    caplog.set_level(logging.WARNING, logger="feedback.mqtt")
    options = ConnectOptions("127.0.0.1", broker.port, "dashboard", DASH_PW, tls=True,
                             ca_file=str(ca), mqtt5=True)  # fmt: skip
    async with MqttLink(options) as link:
        assert await link.wait_connected(10)  # it may log in, and read
        link.publish("settle/d1/status", b'{"state":"streaming"}', qos=1, retain=True)
        async with asyncio.timeout(10):
            while link.denied < 2:  # noqa: ASYNC110 - polling the link from outside
                await asyncio.sleep(0.02)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    why = "Not authorized; this account 'dashboard' may not publish there (the broker's ACL)"
    where = f"the MQTT broker 127.0.0.1:{broker.port} refused"
    # Its "online", then (the rest, when the link closed) the strap's status and "offline".
    assert warnings == [
        f"{where} 1 message from this daemon since the last warning, 1 in all (latest: "
        f"settle/bridge/state: {why}, so nobody receives it)",
        f"{where} 2 messages from this daemon since the last warning, 3 in all (latest: "
        f"settle/bridge/state: {why}, so nobody receives it)",
    ]
