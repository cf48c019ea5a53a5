"""Configuration: the shipped file is the documented defaults; env and flags override; every
bad value is one line naming the field, exit code 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel

from settle.config import Settings, load_config
from settle.errors import ConfigError

CONFIG = Path(__file__).parents[1] / "configs" / "settle.toml"


def test_shipped_config_equals_builtin_defaults() -> None:
    assert load_config(CONFIG).model_dump() == Settings().model_dump()


def test_env_overrides_file_and_flags_override_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    f = tmp_path / "c.toml"
    f.write_text('[mqtt]\nport = 1884\ntopic_base = "home/settle"\n[processing]\nwindow_s = 30\n')
    monkeypatch.setenv("SETTLE_MQTT__PORT", "1885")
    s = load_config(f)
    assert (s.mqtt.port, s.mqtt.topic_base, s.processing.window_s) == (1885, "home/settle", 30)
    s = load_config(f, mqtt={"port": 1999})
    assert s.mqtt.port == 1999
    assert s.mqtt.topic_base == "home/settle"  # sections merge key by key


@pytest.mark.parametrize(
    ("toml", "field", "words"),
    [
        ("[mqtt]\nport = 0\n", "mqtt.port", "greater than or equal to 1"),
        ('[mqtt]\nport = "x"\n', "mqtt.port", "expected a whole number, not a string"),
        ("[mqtt]\nprot = 1\n", "mqtt.prot", "unknown setting"),
        ('[mqtt]\ntopic_base = "a/#"\n', "mqtt.topic_base", "without wildcards"),
        ("[processing]\nwindow_s = 1\n", "processing.window_s", "greater than or equal"),
        ('log_level = "LOUD"\n', "log_level", "DEBUG"),
        ("[mqtt\n", "c.toml", "not valid TOML"),
    ],
)
def test_bad_values_name_the_field(tmp_path: Path, toml: str, field: str, words: str) -> None:
    f = tmp_path / "c.toml"
    f.write_text(toml)
    with pytest.raises(ConfigError) as exc:
        load_config(f)
    assert field in str(exc.value)
    assert words in str(exc.value)


def test_missing_and_directory_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="directory"):
        load_config(tmp_path)


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "settle.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_cli_bad_config_is_one_line_exit_2(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text("[strap]\nscan_timeout_s = -3\n")
    res = run_cli("sessions", "list", "--config", str(f), "--db", str(tmp_path / "s.db"))
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert lines == [
        "settle: error: config: strap.scan_timeout_s: Input should be greater than 0 (got -3) "
        f"(in {f})"
    ]


def test_cli_bad_env_is_one_line_exit_2(tmp_path: Path) -> None:
    import os

    env = {**os.environ, "SETTLE_MQTT__PORT": "99999", "SETTLE_CONFIG": str(CONFIG)}
    res = run_cli("sessions", "list", "--db", str(tmp_path / "s.db"), env=env)
    assert res.returncode == 2
    assert len(res.stderr.strip().splitlines()) == 1
    assert "mqtt.port" in res.stderr
    assert res.stderr.rstrip().endswith("(from SETTLE_MQTT__PORT)")  # not the file


def test_an_error_says_where_the_value_came_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`config: processing.window_s: … (got 5)` named neither the file nor the variable: with
    a file, the environment and flags in play, the user had to guess which one to fix."""
    f = tmp_path / "c.toml"
    f.write_text("[processing]\nwindow_s = 5\n")
    with pytest.raises(ConfigError, match=rf"\(got 5\) \(in {f}\)$"):
        load_config(f)
    monkeypatch.setenv("SETTLE_PROCESSING__WINDOW_S", "7")  # overrides the file's
    with pytest.raises(ConfigError, match=r"\(got '7'\) \(from SETTLE_PROCESSING__WINDOW_S\)$"):
        load_config(f)
    monkeypatch.delenv("SETTLE_PROCESSING__WINDOW_S")
    monkeypatch.setenv("SETTLE_PROCESSING", '{"window_s": 8}')
    with pytest.raises(ConfigError, match=r"\(got 8\) \(from SETTLE_PROCESSING\)$"):
        load_config(f)
    monkeypatch.delenv("SETTLE_PROCESSING")
    with pytest.raises(ConfigError, match=r"\(got 19\)$"):  # a flag: it names itself
        load_config(f, processing={"window_s": 19})


@pytest.mark.parametrize(
    ("toml", "field", "words"),
    [
        ("[mqtt]\nport = true\n", "mqtt.port", "expected a whole number, not a boolean (got true)"),
        ("[mqtt]\nport = 1883.0\n", "mqtt.port", "expected a whole number, not a float"),
        ('[processing]\ncorrection = "yes"\n', "processing.correction",
         "expected true or false, not a string (got 'yes')"),
        ('[processing]\ncorrection = "off"\n', "processing.correction", "expected true or false"),
        ("[processing]\ncorrection = 1\n", "processing.correction",
         "expected true or false, not an integer (got 1)"),
        ('[processing]\nwindow_s = "60"\n', "processing.window_s",
         "expected a number, not a string (got '60')"),
        ("[http]\nenabled = 0\n", "http.enabled", "expected true or false, not an integer"),
        ("[mqtt]\nhost = 1979-05-27\n", "mqtt.host", "expected a string, not a date"),
        ("log_format = 1\n", "log_format", "expected a string, not an integer"),
        ('[mqtt]\npassword = 12345\n', "mqtt.password", "expected a string, not an integer (in"),
    ],
)  # fmt: skip
def test_a_file_value_of_the_wrong_toml_type_is_refused(
    tmp_path: Path, toml: str, field: str, words: str
) -> None:
    """Pydantic's lax mode converted them silently: `port = true` was port 1, `correction =
    "off"` false, `window_s = "60"` 60, `enabled = 0` false. A password is never echoed."""
    f = tmp_path / "c.toml"
    f.write_text(toml)
    with pytest.raises(ConfigError) as exc:
        load_config(f)
    assert str(exc.value).startswith(f"config: {field}: {words}")
    assert str(exc.value).endswith(f"(in {f})")
    assert "12345" not in str(exc.value)


def test_environment_text_is_still_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    """A variable is always text: it is read by the setting's type, as before."""
    monkeypatch.setenv("SETTLE_MQTT__PORT", "1884")
    monkeypatch.setenv("SETTLE_PROCESSING__CORRECTION", "false")
    monkeypatch.setenv("SETTLE_PROCESSING__WINDOW_S", "30")
    s = load_config(CONFIG)
    assert (s.mqtt.port, s.processing.correction, s.processing.window_s) == (1884, False, 30.0)


@pytest.mark.parametrize(
    ("var", "value", "field", "words"),
    [
        ("SETTLE_MQTT", '{"port": true}', "mqtt.port",
         "expected a whole number, not a boolean (got true)"),
        ("SETTLE_MQTT", '{"port": "1884"}', "mqtt.port",
         "expected a whole number, not a string (got '1884')"),
        ("SETTLE_MQTT", '{"port": 1884.0}', "mqtt.port", "expected a whole number, not a float"),
        ("SETTLE_PROCESSING", '{"correction": "yes"}', "processing.correction",
         "expected true or false, not a string (got 'yes')"),
        ("SETTLE_PROCESSING", '{"Correction": 1}', "processing.correction",
         "expected true or false, not an integer (got 1)"),
        ("SETTLE_PROCESSING", '{"window_s": "60"}', "processing.window_s",
         "expected a number, not a string (got '60')"),
        ("SETTLE_MQTT", '{"port": null}', "mqtt.port", "expected a whole number, not null"),
        ("SETTLE_MQTT", '{"password": 12345}', "mqtt.password",
         "expected a string, not an integer (from"),
    ],
)  # fmt: skip
def test_a_json_section_value_of_the_wrong_type_is_refused(
    monkeypatch: pytest.MonkeyPatch, var: str, value: str, field: str, words: str
) -> None:
    """A whole section as JSON in one variable has JSON's types and is held to the file's
    rule: pydantic took `{"port": true}` as port 1 and `{"correction": "yes"}` as true."""
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError) as exc:
        load_config(CONFIG)
    assert str(exc.value).startswith(f"config: {field}: {words}")
    assert str(exc.value).endswith(f"(from {var})")
    assert "12345" not in str(exc.value)


def test_a_json_section_of_the_right_types_is_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SETTLE_MQTT", '{"port": 1884, "tls": false, "host": "broker.lan"}')
    monkeypatch.setenv("SETTLE_PROCESSING", '{"window_s": 30, "baseline_s": 90.5}')
    s = load_config(CONFIG)
    assert (s.mqtt.port, s.mqtt.tls, s.mqtt.host) == (1884, False, "broker.lan")
    assert (s.processing.window_s, s.processing.baseline_s) == (30.0, 90.5)


def test_a_json_section_may_leave_an_optional_setting_unset_with_null(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """JSON null for a setting that may be unset (a password, a token file) is no value of
    the wrong type: refused as "expected a string, not null", it stopped a deployment that
    writes the variable from a dict holding None. A setting that needs a value still
    refuses it."""
    monkeypatch.setenv("SETTLE_MQTT", '{"host": "broker.lan", "password": null}')
    monkeypatch.setenv("SETTLE_HTTP", '{"token_file": null}')
    s = load_config(CONFIG)
    assert (s.mqtt.host, s.mqtt.password, s.http.token_file) == ("broker.lan", None, None)
    monkeypatch.setenv("SETTLE_MQTT", '{"host": null}')
    with pytest.raises(ConfigError, match=r"mqtt\.host: expected a string, not null"):
        load_config(CONFIG)


def test_an_error_names_the_source_that_holds_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A set SETTLE_MQTT was blamed for every bad mqtt.* key, even one from the file."""
    f = tmp_path / "c.toml"
    f.write_text("[mqtt]\nport = 0\n")
    monkeypatch.setenv("SETTLE_MQTT", '{"host": "broker.lan"}')
    with pytest.raises(ConfigError, match=rf"mqtt\.port: .* \(got 0\) \(in {f}\)$"):
        load_config(f)
    f.write_text("[mqtt]\nprot = 1\n")
    with pytest.raises(ConfigError, match=rf"mqtt\.prot: unknown setting \(in {f}\)$"):
        load_config(f)
    monkeypatch.setenv("SETTLE_MQTT", '{"host": "broker.lan", "prot": 1}')
    with pytest.raises(ConfigError, match=r"mqtt\.prot: unknown setting \(from SETTLE_MQTT\)$"):
        load_config(f)
    f.write_text("")
    monkeypatch.setenv("SETTLE_MQTT", '{"port": 1884}')
    monkeypatch.setenv("SETTLE_MQTT__PORT", "0")  # wins over the object's port
    with pytest.raises(ConfigError, match=r"\(got '0'\) \(from SETTLE_MQTT__PORT\)$"):
        load_config(f)


def test_every_setting_has_a_toml_type() -> None:
    """The file type check covers every setting: a new kind of field must be added to it."""
    from settle.config import toml_kind

    for name, field in Settings.model_fields.items():
        kind = field.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            for key, sub in kind.model_fields.items():
                assert toml_kind(sub.annotation) is not None, f"{name}.{key}"
        else:
            assert toml_kind(kind) is not None, name


def test_a_byte_order_mark_is_skipped(tmp_path: Path) -> None:
    """Windows Notepad starts a UTF-8 file with one: it read "not valid TOML: Invalid
    statement (at line 1, column 1)"."""
    f = tmp_path / "c.toml"
    f.write_bytes(b"\xef\xbb\xbf[processing]\nwindow_s = 30\n")
    assert load_config(f).processing.window_s == 30


@pytest.mark.parametrize(
    "toml",
    [
        '[storage]\ndb_path = "/tmp/a\\u0000b.db"\n',
        '[demo]\nreplay = "/tmp/a\\u0000b.csv"\n',
        '[http]\ntoken_file = "/tmp/a\\u0000b"\n',
    ],
)
def test_a_nul_in_a_path_is_a_config_error(tmp_path: Path, toml: str) -> None:
    """A NUL passed validation: `settle demo` ended in "ValueError: embedded null byte", `sessions
    list` said "no session store at /tmp/a\\x00b.db", `doctor` "will be created"."""
    f = tmp_path / "c.toml"
    f.write_text(toml)
    key = toml.split("]")[0][1:] + "." + toml.split("\n")[1].split(" ")[0]
    for args in (["demo", "--duration", "1", "--no-mqtt"], ["sessions", "list"], ["doctor"]):
        res = run_cli(*args, "--config", str(f))
        assert res.returncode == 2, res.stderr
        assert res.stderr.startswith(
            f"settle: error: config: {key}: a path cannot contain a NUL character"
        ), res.stderr
        assert len(res.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("where", ["file", "flag"])
def test_a_negative_seed_is_refused(tmp_path: Path, where: str) -> None:
    """numpy takes no negative seed: `settle demo --seed=-1` ended in a traceback."""
    f = tmp_path / "c.toml"
    f.write_text("[demo]\nseed = -5\n" if where == "file" else "")
    args = ["--seed=-1"] if where == "flag" else []
    res = run_cli("demo", "--duration", "1", "--no-mqtt", "--db", str(tmp_path / "s.db"),
                  "--config", str(f), *args)  # fmt: skip
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    assert ("--seed" if where == "flag" else "demo.seed") in res.stderr
    assert not (tmp_path / "s.db").exists()


def test_a_flag_error_names_the_flag_not_config(tmp_path: Path) -> None:
    res = run_cli("doctor", "--mqtt", "localhost", "--config", str(CONFIG))
    assert res.returncode == 2
    assert res.stderr.startswith("settle: error: --mqtt: expected HOST:PORT"), res.stderr


def test_our_validators_read_without_pydantics_prefix(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text('[storage]\ndb_path = "$SETTLE_TEST_UNSET_VARIABLE/s.db"\n')
    with pytest.raises(ConfigError) as exc:
        load_config(f)
    assert str(exc.value).startswith(
        "config: storage.db_path: $SETTLE_TEST_UNSET_VARIABLE is not set"
    )


@pytest.mark.parametrize(
    "value, words",
    [
        ("localhost", "expected HOST:PORT"),
        (
            "127.0.0.1:1883:5",
            "expected HOST:PORT (e.g. 127.0.0.1:1883; an IPv6 address in",
        ),  # was host '127.0.0.1:1883'
        (
            "::1",
            "expected HOST:PORT (e.g. 127.0.0.1:1883; an IPv6 address in",
        ),  # was host ':' port 1
        ("[::1", "expected [IPv6 address]:PORT"),
        ("[1::zz]:1883", "expected [IPv6 address]:PORT"),
        ("my broker:1883", "not a host name or address: 'my broker'"),
    ],
)
def test_cli_bad_mqtt_flag(tmp_path: Path, value: str, words: str) -> None:
    """A malformed --mqtt is a usage error naming it (exit 2); `127.0.0.1:1883:5` and `::1`
    were taken apart at the last colon and tried as a broker, ending in "unreachable …
    fix mqtt.host / mqtt.port" (exit 1)."""
    res = run_cli(
        "doctor", "--mqtt", value, "--db", str(tmp_path / "s.db"), "--config", str(CONFIG)
    )
    assert res.returncode == 2, res.stderr
    assert f"--mqtt: {words}" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_a_bracketed_ipv6_broker_is_taken() -> None:
    from settle.cli import parse_hostport

    assert parse_hostport("[::1]:1883") == ("::1", 1883)
    assert parse_hostport("[fe80::1%eth0]:1883") == ("fe80::1%eth0", 1883)
    assert parse_hostport("broker.local:8883") == ("broker.local", 8883)
    # Taken before the stricter parsing, and still: brackets around a name, another script.
    assert parse_hostport("[127.0.0.1]:1883") == ("127.0.0.1", 1883)
    assert parse_hostport("bröker.local:1883") == ("bröker.local", 1883)
    with pytest.raises(ConfigError, match="expected HOST:PORT"):
        parse_hostport("host:²")  # isdigit() but not a port: int() raised a traceback


def test_paths_expand_home_and_variables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`db_path = "~/settle/s.db"` means the home directory, as in a shell (it used to create
    a directory literally named '~' under the working directory)."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("DATA", str(tmp_path / "data"))
    f = tmp_path / "c.toml"
    f.write_text('[storage]\ndb_path = "~/settle/s.db"\n[demo]\nreplay = "$DATA/r.csv"\n')
    s = load_config(f)
    assert s.db_path == tmp_path / "settle" / "s.db"
    assert s.demo.replay == tmp_path / "data" / "r.csv"
    monkeypatch.setenv("SETTLE_STORAGE__DB_PATH", "~/other.db")
    assert load_config(f).db_path == tmp_path / "other.db"
    monkeypatch.setenv("SETTLE_LOG_LEVEL", "debug")  # any case, as people type it
    assert load_config(f).log_level == "DEBUG"
    # A variable that is not set is an error naming it, not a directory called "$NOPE".
    monkeypatch.delenv("NOPE", raising=False)
    monkeypatch.setenv("SETTLE_STORAGE__DB_PATH", "${NOPE}/other.db")
    with pytest.raises(ConfigError, match=r"storage\.db_path: .*\$\{NOPE\} is not set"):
        load_config(f)


def test_a_store_an_older_settle_made_under_a_literal_tilde_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before `~` was expanded, `db_path = "~/settle/s.db"` made "./~/settle/s.db" in the
    working directory. After the upgrade the same config meant $HOME/settle/s.db: `sessions
    list` said there was no store, and the next run started an empty one. Now the config
    is refused with one line naming where the old store is and how to move it."""
    home, wd = tmp_path / "home", tmp_path / "wd"
    home.mkdir()
    (wd / "~" / "settle").mkdir(parents=True)
    (wd / "~" / "settle" / "s.db").write_bytes(b"")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(wd)
    f = tmp_path / "c.toml"
    f.write_text('[storage]\ndb_path = "~/settle/s.db"\n')
    with pytest.raises(ConfigError, match="an older Settle read") as err:
        load_config(f)
    assert str(wd / "~" / "settle" / "s.db") in str(err.value) and "\n" not in str(err.value)
    (home / "settle").mkdir()
    (home / "settle" / "s.db").write_bytes(b"")  # moved (or a store there already): fine
    assert load_config(f).db_path == home / "settle" / "s.db"


@pytest.mark.parametrize(
    "var, hint",
    [
        ("SETTLE_MQTT__HOTS", "did you mean SETTLE_MQTT__HOST?"),
        # A key of a known section is matched among that section's keys alone: the shared
        # prefix made "did you mean SETTLE_PROCESSING?" (a section, not a setting) the answer.
        ("SETTLE_PROCESSING__BOGUS", "processing settings: window_s, baseline_s,"),
    ],
)
def test_an_unknown_key_of_a_section_is_answered_with_that_sections_keys(
    var: str, hint: str
) -> None:
    from settle.config import _check_environment

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(var, "1")
        with pytest.raises(ConfigError) as exc:
            _check_environment()
    assert f"unknown setting in the environment ({hint}" in str(exc.value)


def test_misspelt_environment_variable_is_an_error(tmp_path: Path) -> None:
    import os

    env = {**os.environ, "SETTLE_PROCESING__BASELINE_S": "300", "SETTLE_CONFIG": str(CONFIG)}
    res = run_cli("sessions", "list", "--db", str(tmp_path / "s.db"), env=env)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        "settle: error: config: SETTLE_PROCESING__BASELINE_S: unknown setting in the "
        "environment (did you mean SETTLE_PROCESSING__BASELINE_S?)"
    ]
    from sessions.store import SessionStore

    SessionStore.open(tmp_path / "s.db").close()
    env = {**os.environ, "SETTLE_PROCESSING__BASELINE_S": "300", "SETTLE_CONFIG": str(CONFIG)}
    res = run_cli("sessions", "list", "--db", str(tmp_path / "s.db"), env=env)
    assert res.returncode == 0, res.stderr


def test_secrets_are_never_echoed_in_errors(tmp_path: Path) -> None:
    """Config errors go to the terminal and, under systemd, the journal: `mqtt.password =
    987654321` printed "(got 987654321)", a misspelt `pasword = "…"` printed the password,
    and `--mqtt user:pass@host:port` was accepted and the password then shown in the banner,
    the watch line and every retry warning."""
    cases = [
        ("[mqtt]\npassword = 987654321\n", "mqtt.password", "987654321"),
        ('[mqtt]\npasword = "Hunter2-typo-secret"\n', "mqtt.pasword", "Hunter2-typo-secret"),
        ('[mqtt]\nhost = "settle:S3cretPW@broker.lan"\n', "mqtt.host", "S3cretPW"),
        # A whole section written as a value: it was echoed, whatever it held.
        ('mqtt = "password = Hunter2-section"\n', "mqtt", "Hunter2-section"),
    ]
    for text, field, secret in cases:
        f = tmp_path / "c.toml"
        f.write_text(text)
        res = run_cli("sessions", "list", "--config", str(f), "--db", str(tmp_path / "s.db"))
        assert res.returncode == 2
        (line,) = res.stderr.splitlines()
        assert f"config: {field}: " in line and secret not in line, line
    res = run_cli("demo", "--mqtt", "settle:S3cretPW-xyzzy@127.0.0.1:1883", "--config",
                  str(CONFIG), "--db", str(tmp_path / "s.db"))  # fmt: skip
    assert res.returncode == 2 and res.stdout == ""
    (line,) = res.stderr.splitlines()
    assert "--mqtt: HOST:PORT only: credentials go in mqtt.username" in line
    assert "S3cretPW" not in line


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("SETTLE_MQTT", "garbage"),  # not JSON: a 40-line pydantic_settings traceback
        ("SETTLE_MQTT", '{"password": "Hunter2-env'),  # broken JSON holding a secret
        ("SETTLE_PROCESSING", "1"),  # JSON, but not an object: named "processing" only
    ],
)
def test_a_section_variable_that_is_not_a_json_object_is_one_line(
    tmp_path: Path, var: str, value: str
) -> None:
    import os

    env = {**os.environ, var: value, "SETTLE_CONFIG": str(CONFIG)}
    res = run_cli("sessions", "list", "--db", str(tmp_path / "s.db"), env=env)
    assert res.returncode == 2
    section = var.removeprefix("SETTLE_").lower()
    name, example = {
        "mqtt": ("ENABLED", '{"enabled": true}'),
        "processing": ("WINDOW_S", '{"window_s": 60.0}'),
    }[section]
    assert res.stderr.splitlines() == [
        f"settle: error: config: {var}: expected a JSON object of [{section}] settings, e.g. "
        f"{var}='{example}' (or one setting per variable: {var}__{name}=…)"
    ]
    assert "Hunter2" not in res.stderr
    assert not (tmp_path / "s.db").exists()


def test_a_token_file_that_is_not_utf8_is_one_line(tmp_path: Path) -> None:
    """It ended in a UnicodeDecodeError traceback after the banner."""
    import os

    token = tmp_path / "tok"
    token.write_bytes(b"\xff\xfe\xfa\xfb0123456789abcdefghij")
    token.chmod(0o600)
    f = tmp_path / "c.toml"
    f.write_text(f'[http]\nport = 0\ntoken_file = "{token}"\nrequire_token = true\n')
    env = {**os.environ, "SETTLE_HTTP__ENABLED": "true"}
    res = run_cli("demo", "--duration", "2", "--no-mqtt", "--config", str(f),
                  "--db", str(tmp_path / "s.db"), env=env)  # fmt: skip
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    assert f"settle: error: config: http.token_file: {token} is not UTF-8 text" in res.stderr


@pytest.mark.parametrize(
    ("kind", "words"),
    [
        ("directory", "cannot read {token}: Is a directory"),
        ("0644", "{token} is readable by others (chmod 600 it)"),
        ("short", "{token} holds a token of 5 characters; use at least"),
    ],
)
@pytest.mark.parametrize("command", [["demo"], ["run", "--replay", "REPLAY"]])
def test_a_bad_token_file_is_refused_before_the_daemon_says_it_started(
    tmp_path: Path, kind: str, words: str, command: list[str]
) -> None:
    """The token file was read only when the dashboard came up: the banner ("settle demo:
    virtual strap …", mqtt, store, stop lines) said the daemon had started, then came the
    config error. Now it is one line before anything, exit 2, no store made."""
    import os

    from tests.conftest import DATA

    token = tmp_path / "tok"
    if kind == "directory":
        token.mkdir()
    else:
        token.write_text("abcde\n" if kind == "short" else "0123456789abcdefghijklmnop\n")
        token.chmod(0o644 if kind == "0644" else 0o600)
    f = tmp_path / "c.toml"
    f.write_text(f'[http]\nport = 0\ntoken_file = "{token}"\nrequire_token = true\n')
    env = {**os.environ, "SETTLE_HTTP__ENABLED": "true"}
    args = [str(DATA / "pyhrv_nni_short.csv") if a == "REPLAY" else a for a in command]
    res = run_cli(*args, "--duration", "2", "--no-mqtt", "--config", str(f),
                  "--db", str(tmp_path / "s.db"), env=env)  # fmt: skip
    assert res.returncode == 2, res.stderr
    assert res.stdout == ""
    (line,) = res.stderr.splitlines()
    assert line.startswith("settle: error: config: http.token_file: " + words.format(token=token))
    assert not (tmp_path / "s.db").exists()


def test_serve_refuses_a_bad_token_file_before_its_banner(tmp_path: Path) -> None:
    """serve() itself (every caller, not only the CLI's check) reads the token file before
    it opens the store or prints a line."""
    import asyncio
    import io

    from rich.console import Console

    from settle.app import serve

    token = tmp_path / "tok"
    token.mkdir()
    settings = load_config(
        CONFIG,
        http={"enabled": True, "token_file": str(token), "require_token": True, "port": 0},
        mqtt={"enabled": False},
        storage={"db_path": str(tmp_path / "s.db")},
    )
    buf = io.StringIO()
    with pytest.raises(ConfigError, match=r"http\.token_file: cannot read"):
        asyncio.run(
            serve(settings, scanner_kwargs={}, client_kwargs={}, source="ble",
                  console=Console(file=buf), banner="settle run: started", handle_signals=False)
        )  # fmt: skip
    assert buf.getvalue() == ""
    assert not (tmp_path / "s.db").exists()


def test_a_password_file_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_bytes(b"\xff\xfepassword")
    pw.chmod(0o600)
    f = tmp_path / "c.toml"
    f.write_text(f'[mqtt]\npassword_file = "{pw}"\n')
    with pytest.raises(ConfigError, match=r"mqtt\.password_file: not UTF-8 text"):
        load_config(f).mqtt.password_value()


@pytest.mark.parametrize(
    ("platform", "address", "words"),
    [
        ("linux", "foo", "not a Bluetooth address (AA:BB:CC:DD:EE:FF, as `settle scan` lists it)"),
        ("linux", "AA:BB:CC:DD:EE", "not a Bluetooth address"),
        ("win32", "0A1B2C3D-4E5F-6A7B-8C9D-0E1F2A3B4C5D",
         "a macOS strap UUID, but here a strap is named by its Bluetooth address"),
        ("darwin", "AA:BB:CC:DD:EE:FF",
         "a Bluetooth address, but macOS names a strap by a UUID instead (e.g. 0A1B2C3D-"),
        ("darwin", "foo", "not a strap's UUID (e.g. 0A1B2C3D-4E5F-6A7B-8C9D-0E1F2A3B4C5D"),
    ],
)  # fmt: skip
def test_a_strap_address_bleak_cannot_find_here_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch, platform: str, address: str, words: str
) -> None:
    """`[strap] address = "foo"` (or `settle run --address foo`) was never checked: the
    daemon looked for it until the scan timed out, exit 1, and under systemd restarted every
    5 s. bleak names straps by their Bluetooth address, on macOS by a CoreBluetooth UUID."""
    monkeypatch.setattr(sys, "platform", platform)
    with pytest.raises(ConfigError, match=r"^config: strap\.address: ") as caught:
        load_config(CONFIG, strap={"address": address})
    assert words in str(caught.value)
    good = "0a1b2c3d-4e5f-6a7b-8c9d-0e1f2a3b4c5d" if platform == "darwin" else "aa:bb:cc:dd:ee:ff"
    assert load_config(CONFIG, strap={"address": f" {good} "}).strap.address == good


def test_run_refuses_an_address_bleak_cannot_find_before_starting(tmp_path: Path) -> None:
    for args, line in [
        (("--address", "foo"),
         "settle: error: --address: not a Bluetooth address (AA:BB:CC:DD:EE:FF, as `settle "
         "scan` lists it) (got 'foo')"),
        (("--config", str(_toml(tmp_path, '[strap]\naddress = "anna"\n'))),
         "settle: error: config: strap.address: not a Bluetooth address (AA:BB:CC:DD:EE:FF, "
         f"as `settle scan` lists it) (got 'anna') (in {tmp_path / 'c.toml'})"),
    ]:  # fmt: skip
        res = run_cli("run", *args, "--no-mqtt", "--no-http", "--db", str(tmp_path / "s.db"))
        assert res.returncode == 2
        assert res.stderr.splitlines() == [line]
        assert res.stdout == ""  # nothing started
    assert not (tmp_path / "s.db").exists()


def _toml(tmp_path: Path, text: str) -> Path:
    f = tmp_path / "c.toml"
    f.write_text(text)
    return f
