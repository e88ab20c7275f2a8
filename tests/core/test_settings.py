"""Settings refuse what cannot work, in-process and through `callstatus serve` (exit 2)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from callstatus.core.settings import SettingsError
from tests.factories import make_settings
from tests.servers import free_port


@pytest.mark.parametrize(
    "url",
    [
        "notaurl",
        "calls.example.com",
        "/plivo",
        "ftp://calls.example.com",
        "https://",
        "https://:8443",
        "https://calls.example.com?tenant=a",
        "https://calls.example.com/#top",
        "https://calls.example.com/#",
        "https://calls.example.com?",
        "http://calls.example.com:port",
        "http://calls.example.com:99999",
        "https://calls example.com",
    ],
)
def test_public_base_url_must_be_an_absolute_http_url(tmp_path: Path, url: str) -> None:
    with pytest.raises(ValidationError, match="PUBLIC_BASE_URL"):
        make_settings(tmp_path, PUBLIC_BASE_URL=url)


@pytest.mark.parametrize(
    ("url", "stored"),
    [
        ("https://calls.example.com/", "https://calls.example.com"),
        (" https://calls.example.com/hooks/ ", "https://calls.example.com/hooks"),
        ("http://127.0.0.1:8000", "http://127.0.0.1:8000"),
        ("", None),
    ],
)
def test_public_base_url_is_normalised(tmp_path: Path, url: str, stored: str | None) -> None:
    assert make_settings(tmp_path, PUBLIC_BASE_URL=url).public_base_url == stored


@pytest.mark.parametrize(
    "zone",
    ["Mars/Olympus_Mons", "", "utc", "+05:30", "../../etc/passwd", "Asia/Kolkata "],
)
def test_plivo_timezone_must_be_an_iana_zone(tmp_path: Path, zone: str) -> None:
    with pytest.raises(ValidationError, match="PLIVO_TIMEZONE"):
        make_settings(tmp_path, PLIVO_TIMEZONE=zone)


@pytest.mark.parametrize("zone", ["UTC", "Asia/Kolkata", "America/New_York", "Etc/GMT+5"])
def test_plivo_timezone_accepts_iana_zones(tmp_path: Path, zone: str) -> None:
    assert make_settings(tmp_path, PLIVO_TIMEZONE=zone).plivo_timezone == zone


def test_tokens_and_numbers_are_comma_separated(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path, PLIVO_AUTH_TOKEN=" a, b ,,", DIAL_NUMBERS="+1, sip:x@y ,", DASHBOARD_PASSWORD=" "
    )
    assert settings.auth_tokens == ["a", "b"]
    assert settings.dial_numbers == ["+1", "sip:x@y"]
    assert settings.dashboard_password is None
    assert make_settings(tmp_path, PLIVO_AUTH_TOKEN="  ").development_mode


@pytest.mark.parametrize("timeout", ["0", "-1", "soon", "3601"])
def test_dial_timeout_is_a_sane_number(tmp_path: Path, timeout: str) -> None:
    with pytest.raises(ValidationError, match="DIAL_TIMEOUT"):
        make_settings(tmp_path, DIAL_TIMEOUT=timeout)


LONG_PASSWORD = "correct-horse-battery"


@pytest.mark.parametrize(
    ("host", "values", "missing"),
    [
        ("0.0.0.0", {}, ["DASHBOARD_PASSWORD", "PLIVO_AUTH_TOKEN"]),
        ("0.0.0.0", {"DASHBOARD_PASSWORD": LONG_PASSWORD}, ["PLIVO_AUTH_TOKEN"]),
        ("::", {"PLIVO_AUTH_TOKEN": "t"}, ["DASHBOARD_PASSWORD"]),
        ("calls.example.com", {}, ["DASHBOARD_PASSWORD", "PLIVO_AUTH_TOKEN"]),
        (
            "192.168.1.10",
            {"PLIVO_AUTH_TOKEN": " ", "DASHBOARD_PASSWORD": LONG_PASSWORD},
            ["PLIVO_AUTH_TOKEN"],
        ),
        ("127.0.0.1", {}, []),
        ("127.0.0.2", {}, []),
        ("::1", {}, []),
        ("localhost", {}, []),
        ("0.0.0.0", {"DASHBOARD_PASSWORD": LONG_PASSWORD, "PLIVO_AUTH_TOKEN": "t"}, []),
        ("127.0.0.1", {"DASHBOARD_PASSWORD": "pw"}, []),
    ],
)
def test_serving_beyond_loopback_needs_password_and_token(
    tmp_path: Path, host: str, values: dict[str, str], missing: list[str]
) -> None:
    settings = make_settings(tmp_path, **values)
    if not missing:
        settings.check_serving(host)
        return
    with pytest.raises(SettingsError) as refused:
        settings.check_serving(host)
    for name in ("DASHBOARD_PASSWORD", "PLIVO_AUTH_TOKEN"):
        assert (name in str(refused.value)) == (name in missing)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "calls.example.com"])
@pytest.mark.parametrize("password", ["x", "pw", "elevenchars"])
def test_serving_beyond_loopback_needs_a_12_character_password(
    tmp_path: Path, host: str, password: str
) -> None:
    settings = make_settings(tmp_path, DASHBOARD_PASSWORD=password, PLIVO_AUTH_TOKEN="t")
    with pytest.raises(SettingsError) as refused:
        settings.check_serving(host)
    message = str(refused.value)
    assert f"{len(password)}-character DASHBOARD_PASSWORD" in message
    assert "at least 12 characters" in message
    assert "\n" not in message
    make_settings(tmp_path, DASHBOARD_PASSWORD="twelve-chars", PLIVO_AUTH_TOKEN="t").check_serving(
        host
    )
    settings.check_serving("127.0.0.1")  # on loopback any password will do


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CALLSTATUS_REQUEST_TIMEOUT", "0"),
        ("CALLSTATUS_REQUEST_TIMEOUT", "soon"),
        ("CALLSTATUS_KEEPALIVE_TIMEOUT", "0"),
        ("CALLSTATUS_MAX_CONNECTIONS", "5"),
        ("CALLSTATUS_MAX_CONNECTIONS", "many"),
    ],
)
def test_connection_limits_are_sane_numbers(tmp_path: Path, name: str, value: str) -> None:
    with pytest.raises(ValidationError, match=name):
        make_settings(tmp_path, **{name: value})


def test_connection_limit_defaults(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    assert settings.request_timeout_s == 30
    assert 5 <= settings.keepalive_timeout_s <= 15
    assert settings.max_connections == 2000


# (environment, extra arguments, what stderr must say); the combinations are covered above
CLI_CASES = [
    ({"PUBLIC_BASE_URL": "calls.example.com"}, [], "invalid PUBLIC_BASE_URL"),
    ({"PLIVO_TIMEZONE": "Mars/Olympus_Mons"}, [], "invalid PLIVO_TIMEZONE"),
    (
        {},
        ["--host", "0.0.0.0"],
        "refusing to listen on 0.0.0.0 without DASHBOARD_PASSWORD (the dashboard shows callers'"
        " numbers) and PLIVO_AUTH_TOKEN",
    ),
    (
        {"DASHBOARD_PASSWORD": "letmein", "PLIVO_AUTH_TOKEN": "t"},
        ["--host", "0.0.0.0"],
        "refusing to listen on 0.0.0.0 with a 7-character DASHBOARD_PASSWORD: use at least 12",
    ),
]


def test_callstatus_serve_refuses_to_start_with_exit_status_2(tmp_path: Path) -> None:
    base_env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PLIVO_", "PUBLIC_BASE_URL", "DASHBOARD_", "DIAL_", "CALLSTATUS_"))
    }
    processes = []
    for i, (env, args, _) in enumerate(CLI_CASES):
        workdir = tmp_path / f"case{i}"
        workdir.mkdir()  # no .env here: only the environment given counts
        command = [
            sys.executable,
            "-m",
            "callstatus.cli",
            "serve",
            "--port",
            str(free_port()),
            "--db",
            str(workdir / "x.duckdb"),
            *args,
        ]
        processes.append(
            subprocess.Popen(
                command,
                cwd=workdir,
                env={**base_env, **env},
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    try:
        for process, (env, args, message) in zip(processes, CLI_CASES, strict=True):
            out, err = process.communicate(timeout=60)
            assert process.returncode == 2, (env, args, out, err)
            assert message in err, (env, args, err)
            assert "Traceback" not in err
            assert err.startswith("callstatus: ")
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert not any((tmp_path / f"case{i}" / "x.duckdb").exists() for i in range(len(CLI_CASES)))


@pytest.mark.parametrize("value", ["lots", "640", "-1GB", "1 PB"])
def test_memory_limit_must_be_a_size(tmp_path: Path, value: str) -> None:
    with pytest.raises(ValidationError, match="CALLSTATUS_MEMORY_LIMIT"):
        make_settings(tmp_path, CALLSTATUS_MEMORY_LIMIT=value)


def test_server_database_obeys_the_memory_limit(tmp_path: Path) -> None:
    from callstatus.app.runtime import open_database

    database = open_database(make_settings(tmp_path, CALLSTATUS_MEMORY_LIMIT="300MB"))
    try:
        (limit,) = database.cursor().execute("SELECT current_setting('memory_limit')").fetchone()
        assert limit.replace(" ", "") in {"286.1MiB", "300.0MB", "300MB"}
    finally:
        database.close()
