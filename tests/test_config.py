"""Settings: defaults, environment, flags, bad values, and the README documents them all."""

from __future__ import annotations

from pathlib import Path

import pytest

from sessdb.config import SETTINGS, Settings, resolve
from sessdb.errors import ConfigError


def test_defaults_match_the_contract() -> None:
    settings = resolve({}).settings
    assert settings == Settings()
    assert settings.port == 8080 and settings.host == "127.0.0.1"
    assert settings.session_queue_limit == 16 and settings.max_sessions == 200
    assert settings.state_port is None and settings.dsn is None


def test_flags_win_over_environment() -> None:
    resolved = resolve({"SESSDB_PORT": "9000", "SESSDB_POOL_SIZE": "3"}, {"PORT": "9100"})
    assert resolved.settings.port == 9100
    assert resolved.settings.pool_size == 3
    assert resolved.sources["PORT"] == "flag"
    assert resolved.sources["POOL_SIZE"] == "env"
    assert resolved.sources["HOST"] == "default"


def test_fractional_session_timeout_is_allowed() -> None:
    assert resolve({"SESSDB_SESSION_TIMEOUT": "0.05"}).settings.session_timeout == 0.05


@pytest.mark.parametrize(
    ("name", "value"),
    [("PORT", "http"), ("PORT", "70000"), ("SESSION_TIMEOUT", "0"), ("SESSION_TIMEOUT", "525601"),
     ("SESSION_COOKIE", "sometimes"), ("SESSION_BIND_IP", "maybe"), ("HOST", "example.com"),
     ("LOG_LEVEL", "loud"), ("POOL_SIZE", "0"), ("ASPNET_VERSION", "1.1.4322"), ("ASPNET_VERSION", "abc"),
     ("ASPNET_VERSION", "")],
)
def test_bad_values_are_refused_with_the_setting_named(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"SESSDB_{name}"):
        resolve({f"SESSDB_{name}": value})


def test_unknown_setting_variable_is_refused() -> None:
    with pytest.raises(ConfigError, match="SESSDB_PROT"):
        resolve({"SESSDB_PROT": "1"})


def test_state_port_off_or_number() -> None:
    assert resolve({"SESSDB_STATE_PORT": "off"}).settings.state_port is None
    assert resolve({"SESSDB_STATE_PORT": "42424"}).settings.state_port == 42424


def test_every_setting_is_documented_in_the_readme() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    missing = [s.name for s in SETTINGS if f"`{s.name}`" not in readme]
    assert not missing, f"settings missing from README: {missing}"
