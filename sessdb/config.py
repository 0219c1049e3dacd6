"""Settings: the one table of every setting, and the one place that reads them.

Every setting of contract section 2 is a row of ``SETTINGS``. Values come from, in rising
priority, the table's default, an environment variable ``SESSDB_<NAME>`` and a command-line
flag ``--<name-with-dashes>``. ``resolve()`` is pure: it takes the environment and the flags
as arguments and returns a frozen ``Settings`` plus where each value came from.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sessdb.errors import ConfigError, first_line

ENV_PREFIX = "SESSDB_"


def _text(value: str) -> str:
    return value


def _optional_text(value: str) -> str | None:
    return value or None


def _dsn(value: str) -> str | None:
    """A libpq connection string or URL (empty: the embedded PostgreSQL); checked, not connected."""
    if not value.strip():
        return None
    from psycopg.conninfo import conninfo_to_dict

    try:
        conninfo_to_dict(value)
    except Exception as exc:
        raise ValueError(f"not a libpq connection string or URL: {first_line(exc)}") from None
    return value


def _data_dir(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


def _port(value: str) -> int:
    port = _int_in(0, 65535)(value)
    return port


def _optional_port(value: str) -> int | None:
    if value.strip().lower() in ("", "off", "0", "none"):
        return None
    return _int_in(1, 65535)(value)


def _int_in(low: int, high: int) -> Callable[[str], int]:
    def parse(value: str) -> int:
        try:
            number = int(value.strip())
        except ValueError:
            raise ValueError(f"expected a whole number, got {value!r}") from None
        if not low <= number <= high:
            raise ValueError(f"must be between {low} and {high}, got {number}")
        return number

    return parse


def _float_in(low: float, high: float, *, low_open: bool = False) -> Callable[[str], float]:
    def parse(value: str) -> float:
        try:
            number = float(value.strip())
        except ValueError:
            raise ValueError(f"expected a number, got {value!r}") from None
        if number != number or (number <= low if low_open else number < low) or number > high:
            bound = "more than" if low_open else "at least"
            raise ValueError(f"must be {bound} {low:g} and at most {high:g}, got {value.strip()}")
        return number

    return parse


def _choice(*options: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        lowered = value.strip().lower()
        if lowered not in options:
            raise ValueError(f"must be one of {', '.join(options)}, got {value!r}")
        return lowered

    return parse


def _switch(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("on", "true", "yes", "1"):
        return True
    if lowered in ("off", "false", "no", "0"):
        return False
    raise ValueError(f"must be on or off, got {value!r}")


def _aspnet_version(value: str) -> str:
    """An ASP.NET version the state client accepts: dotted numbers, major 2 or more (spec 0.3)."""
    text = value.strip()
    parts = text.split(".")
    if not text or not all(p.isdigit() for p in parts):
        raise ValueError(f"must be a dotted version such as 4.0.30319, got {value!r}")
    if int(parts[0]) < 2:
        raise ValueError(f"the ASP.NET client needs a state server of version 2 or more, got {value!r}")
    return text


def _host(value: str) -> str:
    text = value.strip()
    if not text:
        raise ValueError("must not be empty")
    if text != "localhost":
        try:
            ipaddress.ip_address(text)
        except ValueError:
            raise ValueError(f"must be an IP address or localhost, got {value!r}") from None
    return text


@dataclass(frozen=True)
class Setting:
    """One row of the settings table: name, default (as text), parser and help line."""

    name: str
    default: str
    parse: Callable[[str], Any]
    help: str

    @property
    def env(self) -> str:
        """The environment variable that sets this setting."""
        return ENV_PREFIX + self.name

    @property
    def flag(self) -> str:
        """The command-line flag that sets this setting."""
        return "--" + self.name.lower().replace("_", "-")

    @property
    def attr(self) -> str:
        """The attribute name on ``Settings``."""
        return self.name.lower()


SETTINGS: tuple[Setting, ...] = (
    Setting("DSN", "", _dsn, "external PostgreSQL (libpq URL or key=value); empty: embedded PostgreSQL"),
    Setting("DATA_DIR", "./.sessdb", _data_dir, "embedded PostgreSQL cluster and its logs"),
    Setting("HOST", "127.0.0.1", _host, "address of the web listener"),
    Setting("PORT", "8080", _port, "port of the web listener (0: any free port)"),
    Setting("STATE_HOST", "127.0.0.1", _host, "address of the ASP.NET state-server listener"),
    Setting("STATE_PORT", "off", _optional_port, "port of the ASP.NET state-server listener (off: no listener; 42424 is conventional)"),
    Setting("SESSION_TIMEOUT", "30", _float_in(0, 525600, low_open=True), "minutes of inactivity before a session expires (fractions allowed)"),
    Setting("SWEEP_INTERVAL", "5", _float_in(0.05, 3600), "seconds between sweeps of the timeout queue"),
    Setting("SESSION_QUEUE_LIMIT", "16", _int_in(0, 100000), "requests that may wait on one session; one more gets 503"),
    Setting("MAX_SESSIONS", "200", _int_in(0, 100000), "live HTTP sessions (each holds a PostgreSQL connection)"),
    Setting("POOL_SIZE", "10", _int_in(1, 1000), "connections kept for sessionless requests"),
    Setting("SESSION_RESERVE", "10", _int_in(0, 100000), "connections opened ahead for new sessions, beyond POOL_SIZE"),
    Setting("SESSION_COOKIE", "off", _choice("off", "auto"), "off: cookies are the application's job; auto: the engine sets and clears a sessionid cookie"),
    Setting("SESSION_BIND_IP", "on", _switch, "a request for a session from another client address than its creator's gets 403"),
    Setting("MAX_REQUEST_SIZE", "10485760", _int_in(1, 2**31), "bytes a request may carry; more gets 413"),
    Setting("REQUEST_TIMEOUT", "0", _float_in(0, 86400), "seconds a service statement may run (0: no limit)"),
    Setting("ASPNET_VERSION", "4.0.30319", _aspnet_version, "the X-AspNet-Version the state server reports"),
    Setting("LOG_LEVEL", "info", _choice("debug", "info", "warning", "error"), "logging level"),
    Setting("ADMIN_TOKEN", "", _optional_text, "bearer token that opens the admin surface beyond the loopback address"),
)

SETTINGS_BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}


@dataclass(frozen=True)
class Settings:
    """The effective settings of one sessdb process (contract section 2)."""

    dsn: str | None = None
    data_dir: str = "./.sessdb"
    host: str = "127.0.0.1"
    port: int = 8080
    state_host: str = "127.0.0.1"
    state_port: int | None = None
    session_timeout: float = 30.0
    sweep_interval: float = 5.0
    session_queue_limit: int = 16
    max_sessions: int = 200
    pool_size: int = 10
    session_reserve: int = 10
    session_cookie: str = "off"
    session_bind_ip: bool = True
    max_request_size: int = 10485760
    request_timeout: float = 0.0
    aspnet_version: str = "4.0.30319"
    log_level: str = "info"
    admin_token: str | None = None

    def replace(self, **changes: Any) -> Settings:
        """A copy with some values changed (tests use this for short timeouts)."""
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class Resolved:
    """Settings together with the source of each value: ``default``, ``env`` or ``flag``."""

    settings: Settings
    sources: Mapping[str, str]


def resolve(environ: Mapping[str, str], flags: Mapping[str, str | None] | None = None) -> Resolved:
    """Build ``Settings`` from defaults, ``SESSDB_*`` variables and flags (flags win).

    ``flags`` maps setting names (``"PORT"``) to the raw text given on the command line, or
    None where the flag was not given. Raises ``ConfigError`` naming the setting and its
    source when a value does not parse; an unknown ``SESSDB_*`` variable is an error too, so
    a typo does not silently fall back to a default.
    """
    flags = flags or {}
    _check_unknown_env(environ)
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for setting in SETTINGS:
        raw, source = setting.default, "default"
        if setting.env in environ:
            raw, source = environ[setting.env], "env"
        if flags.get(setting.name) is not None:
            raw, source = flags[setting.name], "flag"
        values[setting.attr] = _parse(setting, raw, source)
        sources[setting.name] = source
    return Resolved(Settings(**values), sources)


# Variables read elsewhere that share the prefix but are not settings of section 2.
_OTHER_ENV = {"SESSDB_TEST_DSN", "SESSDB_DEBUG", "SESSDB_PG_USER"}


def _check_unknown_env(environ: Mapping[str, str]) -> None:
    for key in environ:
        if key.startswith(ENV_PREFIX) and key not in _OTHER_ENV:
            if key[len(ENV_PREFIX):] not in SETTINGS_BY_NAME:
                raise ConfigError(f"unknown setting {key} in the environment")


def _parse(setting: Setting, raw: str, source: str) -> Any:
    try:
        return setting.parse(raw)
    except ValueError as exc:
        where = {"env": setting.env, "flag": setting.flag}.get(source, setting.name)
        raise ConfigError(f"invalid value for {where}: {exc}") from None


def describe(resolved: Resolved) -> list[tuple[str, str, str]]:
    """Rows of (name, effective value, source) for ``sessdb config``; secrets are masked."""
    rows = []
    for setting in SETTINGS:
        value = getattr(resolved.settings, setting.attr)
        if setting.name == "ADMIN_TOKEN" and value:
            value = "********"
        elif setting.name == "DSN" and value:
            value = _mask_password(value)
        rows.append((setting.name, _spelled(setting, value), resolved.sources[setting.name]))
    return rows


def _spelled(setting: Setting, value: Any) -> str:
    """A value as the settings table spells it (on/off, off for no state port, 30 not 30.0)."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if value is None:
        return "off" if setting.name == "STATE_PORT" else ""
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _mask_password(dsn: str) -> str:
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    try:
        parts = conninfo_to_dict(dsn)
    except Exception:
        return "<unparsable DSN>"
    if parts.get("password"):
        parts["password"] = "********"
    return make_conninfo(**parts)  # type: ignore[arg-type]
