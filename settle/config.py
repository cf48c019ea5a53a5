"""Configuration: ``configs/settle.toml`` (or ``--config``) → validated pydantic settings.

Precedence, highest first: command-line flags, ``SETTLE_*`` environment variables (nested
with ``__``, e.g. ``SETTLE_MQTT__PORT=1884``, text read by the setting's type; or a whole
section as a JSON object, ``SETTLE_MQTT='{"port": 1884}'``, whose values must have their
setting's type as in the file), the TOML file, the defaults below (which
``configs/settle.toml`` documents one for one). Nothing past :func:`load_config` touches raw
dicts; a bad value becomes one :class:`~settle.errors.ConfigError` naming the field.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import shlex
import sys
import tomllib
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import platformdirs
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from settle.errors import ConfigError

APP_NAME = "settle"


_VARIABLE = re.compile(r"\$(?:[A-Za-z_][A-Za-z0-9_]*|\{[^}]*\})")
"""``$NAME`` or ``${NAME}`` left in a path after expansion: a variable that is not set."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="before")
    @classmethod
    def _expand_user(cls, v: object, info: ValidationInfo) -> object:
        """``~`` and ``$VARS`` in a path setting mean what they mean in a shell."""
        field = cls.model_fields.get(info.field_name or "")
        is_path = field is not None and "Path" in str(field.annotation)
        if is_path and isinstance(v, str | os.PathLike) and "\x00" in os.fspath(v):
            # No file name holds a NUL: every later use of the path (the store, the demo's
            # replay, the token file) ended in "ValueError: embedded null byte".
            raise ValueError("a path cannot contain a NUL character (\\u0000)")
        if isinstance(v, str) and v and is_path:
            expanded = os.path.expandvars(os.path.expanduser(v))
            unset = _VARIABLE.search(expanded)
            if unset is not None:
                # A shell would make it empty; kept literally it became a directory named
                # "$UNSET_VAR" in the working directory.
                raise ValueError(f"{unset.group(0)} is not set")
            if expanded != v and not os.path.lexists(expanded) and os.path.lexists(v):
                # Settle before 70a822d took ~ and $VARS literally: the file it made is in
                # "./~/…" under the working directory, and a new, empty one would be made.
                raise ValueError(
                    f"{v!r} means {expanded}, which does not exist, but "
                    f"{os.path.abspath(v)} does (an older Settle read {v!r} literally): move "
                    f"it there (mv {shlex.quote(os.path.abspath(v))} {shlex.quote(expanded)}) "
                    "or set this path to it"
                )
            return expanded
        return v


class MqttConfig(_Section):
    enabled: bool = True
    """Publish to MQTT at all (``--no-mqtt`` turns it off)."""
    host: str = ""
    """Broker host. Empty: use 127.0.0.1:1883 if something answers there, else (``embedded``
    permitting) start an embedded broker on 127.0.0.1."""
    port: int = Field(1883, ge=1, le=65535)
    embedded: Literal["auto", "always", "never"] = "auto"
    """When to start the embedded amqtt broker (bound to 127.0.0.1 only)."""
    embedded_port: int = Field(0, ge=0, le=65535)
    """Port of the embedded broker; 0 picks a free one."""
    username: str = ""
    password: SecretStr | None = None
    """Prefer the environment (``SETTLE_MQTT__PASSWORD``) or ``password_file`` to the file."""
    password_file: Path | None = None
    """A file holding only the password (e.g. a systemd credential), read at start."""
    tls: bool = False
    ca_file: Path | None = None
    """CA bundle to verify the broker's certificate; empty: the system's trusted CAs."""
    cert_file: Path | None = None
    """Client certificate (optional), with ``key_file``."""
    key_file: Path | None = None
    tls_insecure: bool = False
    """Do not verify the broker's certificate (testing only)."""
    protocol: Literal["5", "3.1.1"] = "5"
    """MQTT version towards an external broker. 5 lets the daemon see that a command was
    published retained and refuse it at once; the embedded broker speaks 3.1.1 only."""
    topic_base: str = "settle"
    client_id: str = ""
    """MQTT client id; empty: ``settle-<hostname>-<pid>``."""
    keepalive_s: int = Field(30, ge=5, le=3600)
    queue_size: int = Field(2000, ge=10, le=1_000_000)
    """Live messages held while the broker is away; the oldest are dropped (and counted)."""

    @field_validator("password_file", "ca_file", "cert_file", "key_file", mode="before")
    @classmethod
    def _empty_path_is_none(cls, v: object) -> object:
        return None if v == "" else v

    @field_validator("password_file", "ca_file", "cert_file", "key_file")
    @classmethod
    def _readable(cls, v: Path | None) -> Path | None:
        if v is not None and not v.is_file():
            raise ValueError(f"file not found: {v}")
        return v

    @field_validator("host")
    @classmethod
    def _no_credentials_in_host(cls, v: str) -> str:
        if "@" in v or "/" in v:
            # "user:pass@host" or "mqtt://…": the password would be printed in the banner,
            # the watch line and every retry warning. Said without echoing the value.
            raise ValueError(
                "a host name or address only (credentials go in mqtt.username and "
                "SETTLE_MQTT__PASSWORD or mqtt.password_file; TLS in mqtt.tls)"
            )
        return v

    @field_validator("password", mode="before")
    @classmethod
    def _empty_password_is_none(cls, v: object) -> object:
        return None if v == "" else v

    def password_value(self) -> str | None:
        """The password from ``password`` or ``password_file`` (never logged)."""
        if self.password is not None:
            return self.password.get_secret_value()
        if self.password_file is not None:
            try:
                if self.password_file.stat().st_mode & 0o004:
                    # A secret every account can read. Group-readable is allowed (a file
                    # an admin shares with a service group); the dashboard's token file,
                    # which Settle creates itself, must be 0600.
                    raise ConfigError(
                        "mqtt.password_file",
                        f"{self.password_file} is readable by every account (chmod 600 it)",
                    )
                return self.password_file.read_text().strip()
            except OSError as exc:
                raise ConfigError("mqtt.password_file", f"cannot read it: {exc.strerror}") from None
            except UnicodeDecodeError:  # it ended in a traceback
                raise ConfigError("mqtt.password_file", "not UTF-8 text") from None
        return None

    @field_validator("topic_base")
    @classmethod
    def _topic_base(cls, v: str) -> str:
        v = v.strip("/")
        if not v or any(c in v for c in "+#\x00"):
            raise ValueError("must be a non-empty topic without wildcards")
        return v


class HomeAssistantConfig(_Section):
    enabled: bool = True
    """Announce every strap to Home Assistant through MQTT discovery."""
    prefix: str = "homeassistant"
    """Discovery prefix (Home Assistant's default)."""
    status_topic: str = "homeassistant/status"
    """Where Home Assistant says ``online`` when it (re)starts (its "birth message"), and
    Settle announces again. A setting of its own: in Home Assistant it does not follow a
    changed discovery prefix."""

    @field_validator("prefix", "status_topic")
    @classmethod
    def _no_wildcards(cls, v: str) -> str:
        if not v or any(c in v for c in "+#\x00") or v.startswith("/") or v.endswith("/"):
            raise ValueError("a topic without wildcards (+, #), NUL, or a leading/trailing /")
        return v


_BT_ADDRESS = re.compile(r"(?:[0-9A-Fa-f]{2}:){5}[0-9A-Fa-f]{2}")
_CB_UUID = re.compile(r"[0-9A-Fa-f]{8}-(?:[0-9A-Fa-f]{4}-){3}[0-9A-Fa-f]{12}")
_EXAMPLE_UUID = "0A1B2C3D-4E5F-6A7B-8C9D-0E1F2A3B4C5D"


def strap_address_problem(address: str, platform: str | None = None) -> str | None:
    """Why ``address`` names no strap bleak can find on ``platform`` (``sys.platform``), or
    None (for an error that echoes the value itself). bleak names a strap by its Bluetooth
    address (``AA:BB:CC:DD:EE:FF``) with BlueZ, WinRT and Android, and by the UUID
    CoreBluetooth assigns on macOS, which never shows the address (``BLEDevice.address``:
    "UUID on macOS"). Anything else was looked for until the scan timed out (exit 1: under
    systemd a restart every 5 s)."""
    mac = (platform or sys.platform) == "darwin"
    if not address or (_CB_UUID.fullmatch(address) if mac else _BT_ADDRESS.fullmatch(address)):
        return None
    listed = "as `settle scan` lists it"
    if mac and _BT_ADDRESS.fullmatch(address):
        return (
            f"a Bluetooth address, but macOS names a strap by a UUID instead (e.g. "
            f"{_EXAMPLE_UUID}, {listed})"
        )
    if mac:
        return f"not a strap's UUID (e.g. {_EXAMPLE_UUID}, {listed})"
    if _CB_UUID.fullmatch(address):
        return (
            "a macOS strap UUID, but here a strap is named by its Bluetooth address "
            f"(AA:BB:CC:DD:EE:FF, {listed})"
        )
    return f"not a Bluetooth address (AA:BB:CC:DD:EE:FF, {listed})"


class StrapConfig(_Section):
    address: str = ""
    """Bluetooth address of the strap (on macOS the UUID CoreBluetooth names it by; anything
    else is a config error: :func:`strap_address_problem`); empty: the first strap offering
    the Heart Rate Service 0x180D, whatever its vendor. Either way, once a strap has connected,
    a reconnect looks for that strap (its address) only, for the daemon's life."""
    name: str = ""
    """Optional name filter (substring, case-insensitive)."""
    ecg: bool = True
    """Record the raw ECG (and ECG-derived beats) when the strap offers Polar PMD (H10)."""
    scan_timeout_s: float = Field(15.0, gt=0, le=600)
    connect_timeout_s: float = Field(20.0, gt=0, le=600)

    @field_validator("address")
    @classmethod
    def _strap_address(cls, v: str) -> str:
        problem = strap_address_problem(v.strip())
        if problem is not None:
            raise ValueError(problem)
        return v.strip()


WINDOW_RANGE_S = (20.0, 600.0)
"""Rolling time-domain window a config or ``settle analyze --window`` may set, s. At least
20 s: a snapshot needs 10 beats in the window (``processing.live.MIN_WINDOW_BEATS``), which
20 s holds down to 30 bpm; with 10 s allowed a heart at 50 bpm or slower was "warming up"
for the whole session, never scored and never said why."""


class ProcessingConfig(_Section):
    window_s: float = Field(60.0, ge=WINDOW_RANGE_S[0], le=WINDOW_RANGE_S[1])
    """Rolling window of the time-domain metrics."""
    baseline_s: float = Field(120.0, ge=10, le=3600)
    """Session baseline: the first N seconds unless a baseline period is marked."""
    indices_every_s: float = Field(5.0, ge=1, le=60)
    """How often (seconds of beat time) indices are computed and published."""
    correction: bool = True
    """Artefact detection and correction (Lipponen & Tarvainen 2019, streaming)."""
    warmup_s: float = Field(5.0, ge=0, le=60)
    """Beats within this long after each (re)connect are recorded but not analysed."""
    rr_min_ms: float = Field(250.0, ge=100, le=1000)
    rr_max_ms: float = Field(2000.0, ge=1000, le=5000)
    """RR outside [rr_min_ms, rr_max_ms] is physiologically implausible: recorded, not analysed.
    250 ms is 240 beats/min, the top of sprint heart rates (273 ms refused 220 beats/min).
    With ``correction``, an interval up to 2 × ``rr_max_ms`` the correction splits (missed
    beats) or one under ``rr_min_ms`` it merges (a spurious beat's piece) is analysed."""
    rr_source: Literal["hrs", "ecg"] = "hrs"
    """Which RR drives the indices: ``hrs``, the strap's own RR (every Heart Rate Service
    strap); ``ecg``, RR from R peaks of the raw ECG (Polar H10 with ``strap.ecg``: sample-level
    timing, lower latency). Both are always stored; a strap without raw ECG, or whose ECG
    fails, uses its own RR."""


class StorageConfig(_Section):
    db_path: Path | None = None
    """SQLite file; empty: ``settle.db`` in the user data directory."""
    flush_every_s: float = Field(1.0, gt=0, le=5)
    """Beats are committed at least this often."""

    @field_validator("db_path", mode="before")
    @classmethod
    def _empty_is_none(cls, v: object) -> object:
        return None if v == "" else v

    @field_validator("db_path")
    @classmethod
    def _a_file_path(cls, v: Path | None) -> Path | None:
        """A path of the wrong kind is a usage error (exit 2, docs/operations.md), found
        before anything starts: it failed opening the store, exit 1 ("cannot open session
        store: Is a directory")."""
        if v is not None:
            problem = store_path_problem(v)
            if problem is not None:
                raise ValueError(problem)
        return v


def store_path_problem(path: Path) -> str | None:
    """Why ``path`` cannot be a session store file — a directory, a device, pipe or socket, or
    a path through a file — or None (it is a file, or can be made)."""
    try:
        if path.is_dir():
            return "a directory, not a session store file (name a file in it, e.g. settle.db)"
        if path.exists() and not path.is_file():
            return "not a regular file (a device, pipe or socket), not a session store file"
        for parent in path.parents:
            if parent.exists():
                if not parent.is_dir():
                    return f"{parent} is a file, not a directory"
                break
    except OSError:  # unreadable: opening the store says why
        return None
    return None


class HttpConfig(_Section):
    enabled: bool = True
    """Serve the dashboard (``--no-http`` turns it off)."""
    host: str = "127.0.0.1"
    """Bound to anything other than loopback, every page and command needs the token."""
    port: int = Field(8765, ge=0, le=65535)
    """0 picks a free port."""
    token_file: Path | None = None
    """Where the access token is kept (mode 0600); empty: ``http-token`` in the config
    directory. Created with a random token on first use."""
    require_token: bool = False
    """Ask for the token on loopback too: on a machine other people log into (any local
    account can reach 127.0.0.1), or behind a reverse proxy, which reaches the dashboard
    from loopback on everyone's behalf."""
    pacer_bpm: float = Field(6.0, ge=4, le=7)
    """Default rate of the dashboard's breathing pacer, breaths per minute."""

    @field_validator("token_file", mode="before")
    @classmethod
    def _empty_is_none(cls, v: object) -> object:
        return None if v == "" else v

    def token_path(self) -> Path:
        return self.token_file or default_config_dir() / "http-token"


class DemoConfig(_Section):
    speed: float = Field(1.0, gt=0, le=1000)
    replay: Path | None = None
    """RR file to replay; empty: the physiological model."""
    seed: int = Field(1, ge=0)
    """Seed of the physiological model (numpy takes no negative seed)."""
    ecg: bool = False
    """Give the virtual strap Polar's PMD service, streaming a synthetic ECG that beats with
    its RR intervals (recorded as a Polar H10's raw ECG is)."""

    @field_validator("replay", mode="before")
    @classmethod
    def _empty_is_none(cls, v: object) -> object:
        return None if v == "" else v


class Settings(BaseSettings):
    """Validated configuration of the daemon and the CLI."""

    model_config = SettingsConfigDict(
        env_prefix="SETTLE_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    mqtt: MqttConfig = MqttConfig()
    homeassistant: HomeAssistantConfig = HomeAssistantConfig()
    strap: StrapConfig = StrapConfig()
    processing: ProcessingConfig = ProcessingConfig()
    storage: StorageConfig = StorageConfig()
    http: HttpConfig = HttpConfig()
    demo: DemoConfig = DemoConfig()
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"
    """Log lines on stderr: ``key=value`` text or one JSON object per line."""

    @field_validator("log_level", mode="before")
    @classmethod
    def _level_any_case(cls, v: object) -> object:
        """``SETTLE_LOG_LEVEL=debug`` means DEBUG (it was refused)."""
        return v.upper() if isinstance(v, str) else v

    @property
    def db_path(self) -> Path:
        return self.storage.db_path or default_data_dir() / "settle.db"


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir(APP_NAME))


def default_config_dir() -> Path:
    return Path(platformdirs.user_config_dir(APP_NAME))


def default_config_path() -> Path | None:
    """``$SETTLE_CONFIG``, else ``settle.toml`` in the user config directory if it exists."""
    env = os.environ.get("SETTLE_CONFIG")
    if env:
        return Path(env)
    p = default_config_dir() / "settle.toml"
    return p if p.is_file() else None


def read_toml(path: Path) -> dict[str, Any]:
    """The file's settings. A UTF-8 byte-order mark at its start (Windows Notepad writes one)
    is skipped: tomllib refused it as "Invalid statement (at line 1, column 1)"."""
    try:
        with path.open("rb") as f:
            return tomllib.loads(f.read().decode("utf-8").removeprefix("\ufeff"))
    except FileNotFoundError:
        raise ConfigError(str(path), "config file not found") from None
    except IsADirectoryError:
        raise ConfigError(str(path), "is a directory, not a config file") from None
    except PermissionError:
        raise ConfigError(str(path), "config file is not readable (permission denied)") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), f"not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(str(path), "not valid TOML: not UTF-8 text") from None


def load_config(path: Path | None = None, **flags: Any) -> Settings:
    """Build the settings from the file at ``path`` (or the default one), env and ``flags``.

    ``flags`` are nested dicts of the values given on the command line, e.g.
    ``{"mqtt": {"enabled": False}}``; ``None`` leaves mean "not given".
    """
    _check_environment()
    path = path if path is not None else default_config_path()
    file_values = read_toml(path) if path is not None else {}
    if path is not None:
        _check_file_types(file_values, path)
    _check_env_json_types()

    class _Loaded(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            # flags > environment > file > defaults; nested sections merge key by key.
            return (init_settings, env_settings, InitSettingsSource(settings_cls, file_values))

    given_flags = _strip_none(flags)
    try:
        return _Loaded(**given_flags)
    except SettingsError as exc:
        # A whole section from the environment (SETTLE_MQTT=…) that is not JSON: pydantic-
        # settings' own error, which ended in a 40-line traceback.
        raise _env_section_error(exc) from None
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        section_var = _env_var(str(err["loc"][0])) if len(err["loc"]) == 1 else None
        if section_var is not None and _section(str(err["loc"][0])) is not None:
            # SETTLE_PROCESSING=1: valid JSON, but not an object of settings.
            raise _env_section_error(None, str(err["loc"][0])) from None
        if err["type"] == "extra_forbidden":
            msg = "unknown setting"
        elif err["type"] == "value_error":  # our validators' own words, without pydantic's
            msg = str(err.get("ctx", {}).get("error", err["msg"]))  # "Value error, " prefix
        else:
            msg = err["msg"]
        given = err.get("input")
        top = Settings.model_fields.get(str(err["loc"][0])) if len(err["loc"]) == 1 else None
        kind = top.annotation if top is not None else None
        # A whole section given as a value (`mqtt = "password = …"`): whatever it holds.
        section = isinstance(kind, type) and issubclass(kind, BaseModel)
        if not (err["type"] == "extra_forbidden" or section):
            msg += _got(loc, given)
        where = _origin(tuple(str(p) for p in err["loc"]), given_flags, file_values, path)
        raise ConfigError(loc, msg + where) from None


def _got(loc: str, given: object) -> str:
    """`` (got …)`` echoing a bad value to help, except where it may be a secret: a password
    or token field, an unknown key (a misspelt `pasword`, not echoed at all), a value with
    an ``@`` (user:password@host); errors reach the journal."""
    secret = any(w in loc.lower() for w in ("password", "token", "secret")) or (
        isinstance(given, str) and "@" in given
    )
    if isinstance(given, bool):
        return "" if secret else f" (got {str(given).lower()})"  # as TOML writes it
    if isinstance(given, str | int | float) and len(repr(given)) <= 60 and not secret:
        return f" (got {given!r})"
    return ""


def _origin(
    loc: tuple[str, ...], flags: dict[str, Any], file_values: dict[str, Any], path: Path | None
) -> str:
    """Where the value at ``loc`` came from, as the end of an error: `` (from SETTLE_…)``,
    `` (in FILE)``; nothing for a command-line flag (the error names it) or a default.

    Asked in the order the sources win: a flag, a ``SETTLE_MQTT__PORT`` variable, a whole
    ``SETTLE_MQTT`` JSON object that holds the key, the file. (A set ``SETTLE_MQTT`` was
    blamed for any ``mqtt.*`` key, even one from the file or from ``SETTLE_MQTT__PORT``.)"""
    if _holds(flags, loc):
        return ""
    for depth in range(len(loc), 0, -1):  # SETTLE_MQTT__PORT, else a whole SETTLE_MQTT
        var = _env_var("__".join(loc[:depth]))
        if var is None:
            continue
        if depth == len(loc):
            return f" (from {var})"
        try:
            value = json.loads(os.environ[var])
        except ValueError:
            continue
        # Keys of an environment object match their settings in any case, as pydantic-
        # settings reads them ({"PORT": 1884} is mqtt.port).
        if _holds(value, loc[depth:], any_case=True):
            return f" (from {var})"
    if path is not None and _holds(file_values, loc):
        return f" (in {path})"
    return ""


def _holds(d: object, loc: tuple[str, ...], *, any_case: bool = False) -> bool:
    """Whether the nested dicts ``d`` have a value at ``loc``."""
    for part in loc:
        if not isinstance(d, dict):
            return False
        key = part if part in d else None
        if key is None and any_case:
            key = next((k for k in d if isinstance(k, str) and k.lower() == part.lower()), None)
        if key is None:
            return False
        d = d[key]
    return True


_TOML_NAMES = {
    bool: "a boolean", int: "an integer", float: "a float", str: "a string", list: "an array",
    dict: "a table",
}  # fmt: skip
_JSON_NAMES = {**_TOML_NAMES, dict: "an object", type(None): "null"}
_EXPECTED = {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}


def toml_kind(annotation: Any) -> type | None:
    """The TOML value type a setting of this annotation takes: bool, int, float or str (a
    path, a secret, one of fixed words); None for a section."""
    if annotation in (bool, int, float, str):
        return annotation  # type: ignore[no-any-return]
    if get_origin(annotation) is Literal:
        return str
    if {Path, SecretStr} & {annotation, *get_args(annotation)}:
        return str
    return None


def _check_file_types(file_values: dict[str, Any], path: Path) -> None:
    """Each value in the file has its setting's TOML type: pydantic's lax mode took
    ``port = true`` as port 1, ``correction = "off"`` as false, ``window_s = "60"`` as 60.
    (Environment variables are text and are still parsed: ``SETTLE_MQTT__PORT=1884``.)
    Unknown keys and values out of range are left to the model."""
    checks: list[tuple[str, dict[str, Any], type[BaseModel]]] = [("", file_values, Settings)]
    for name, values in file_values.items():
        model = _section(name)
        if model is not None and isinstance(values, dict):
            checks.append((f"{name}.", values, model))
    for prefix, values, model in checks:
        _check_types(prefix, values, model, f" (in {path})", _TOML_NAMES)


def _check_env_json_types() -> None:
    """A whole section given as a JSON object in one variable (``SETTLE_MQTT='{"port":
    1884}'``) is held to the file's rule: JSON has types, so each value must have its
    setting's (``true`` is a boolean, ``1884`` a number, ``"1884"`` a string). pydantic
    took ``{"port": true}`` as port 1 and ``{"correction": "yes"}`` as true. A value that
    is not JSON, or not an object, is left to the model's own error."""
    for name in Settings.model_fields:
        model = _section(name)
        var = _env_var(name) if model is not None else None
        if model is None or var is None:
            continue
        try:
            values = json.loads(os.environ[var])
        except ValueError:
            continue
        if isinstance(values, dict):
            _check_types(f"{name}.", values, model, f" (from {var})", _JSON_NAMES, any_case=True)


def _check_types(
    prefix: str,
    values: dict[str, Any],
    model: type[BaseModel],
    where: str,
    names: dict[type, str],
    *,
    any_case: bool = False,
) -> None:
    """Refuse the first value in ``values`` whose type is not its setting's TOML type
    (an int for a float setting is fine); ``where`` ends the error, ``names`` name the
    type found. Unknown keys are left to the model."""
    for key, value in values.items():
        name = key.lower() if any_case and isinstance(key, str) else key
        field = model.model_fields.get(name)
        kind = None if field is None else toml_kind(field.annotation)
        if kind is None:
            continue
        if value is None and field is not None and type(None) in get_args(field.annotation):
            continue  # JSON null for a setting that may be unset (TOML has no null)
        ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            ok = True  # window_s = 60
        if not ok:
            got = next((w for t, w in names.items() if isinstance(value, t)), None)
            raise ConfigError(
                prefix + name,
                f"expected {_EXPECTED[kind]}, not {got or 'a ' + type(value).__name__}"
                f"{_got(prefix + name, value)}{where}",
            )


def _section(name: str) -> type[BaseModel] | None:
    """The model of section ``name`` (``mqtt``…), or None for a plain setting."""
    field = Settings.model_fields.get(name)
    kind = field.annotation if field is not None else None
    return kind if isinstance(kind, type) and issubclass(kind, BaseModel) else None


def _env_var(name: str) -> str | None:
    """The ``SETTLE_<NAME>`` variable set in the environment (any case), or None."""
    want = f"SETTLE_{name.upper()}"
    return next((var for var in sorted(os.environ) if var.upper() == want), None)


def _env_section_error(exc: SettingsError | None, name: str | None = None) -> ConfigError:
    """One line naming the ``SETTLE_<SECTION>`` variable and what it must hold (never its
    value: it may hold a password)."""
    if name is None:
        found = re.search(r'field "(\w+)"', str(exc))
        name = found.group(1) if found else ""
    var = _env_var(name) or f"SETTLE_{name.upper()}"
    model = _section(name)
    if model is None:
        return ConfigError(var, "not a valid value in the environment")
    first, field = next(iter(model.model_fields.items()))
    example = json.dumps({first: field.default})
    return ConfigError(
        var,
        f"expected a JSON object of [{name}] settings, e.g. {var}='{example}' (or one "
        f"setting per variable: {var}__{first.upper()}=…)",
    )


OTHER_ENV = ("SETTLE_CONFIG", "SETTLE_PAIRED_FILE")
"""``SETTLE_*`` variables that are not settings."""


def _known_env_names() -> list[str]:
    names = [*OTHER_ENV]
    for name, field in Settings.model_fields.items():
        names.append(f"SETTLE_{name.upper()}")
        section = field.annotation
        if isinstance(section, type) and issubclass(section, BaseModel):
            names += [f"SETTLE_{name.upper()}__{sub.upper()}" for sub in section.model_fields]
    return names


def _check_environment() -> None:
    """A misspelt ``SETTLE_*`` variable is an error, not silently ignored."""
    known = _known_env_names()
    for var in sorted(os.environ):
        if var.upper().startswith("SETTLE_") and var.upper() not in known:
            raise ConfigError(var, f"unknown setting in the environment{_env_hint(var, known)}")


def _env_hint(var: str, known: list[str]) -> str:
    """A near known name; for an unknown key of a known section, only that section's keys
    (SETTLE_PROCESSING__BOGUS got "did you mean SETTLE_PROCESSING?", a section, not a
    setting), listed when none is near."""
    section, sep, key = var.upper().partition("__")
    keys = [k.partition("__")[2] for k in known if sep and k.startswith(section + "__")]
    if keys:  # judged by the key alone: the shared prefix made any key look near
        near = difflib.get_close_matches(key, keys, n=1)
        if near:
            return f" (did you mean {section}__{near[0]}?)"
        return f" ({section.removeprefix('SETTLE_').lower()} settings: {', '.join(keys).lower()})"
    near = difflib.get_close_matches(var.upper(), known, n=1)
    return f" (did you mean {near[0]}?)" if near else ""


def _strip_none(d: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            inner = _strip_none(v)
            if inner:
                out[k] = inner
        elif v is not None:
            out[k] = v
    return out
