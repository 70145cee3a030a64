"""gateway/settings_loader.py: the environment over .env, parsed and checked, and the one line a bad value gives."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.settings_loader import SettingsError, load_settings, read_env_file

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_start_without_redis_or_upstream() -> None:
    settings = load_settings({}, env_file=None)
    assert settings.api_port == 5050
    assert settings.api_host == "0.0.0.0"
    assert settings.routes == {}
    assert settings.use_redis is False
    assert settings.models_cache_ttl_seconds == 10
    assert settings.max_body_bytes == 4 * 1024 * 1024
    assert settings.sse_heartbeat_seconds == 15
    assert settings.rate_limit_per_min == 60
    assert settings.prometheus_enable is True and settings.metrics_public is False
    assert settings.redis_url == "redis://127.0.0.1:6379/0" and settings.redis_prefix == "gateway:"


def test_routes_keep_their_key_as_written_and_split_replicas() -> None:
    settings = load_settings(
        {"MODEL_ROUTE_tiny": "http://127.0.0.1:8000/v1/", "MODEL_ROUTE_Big": "http://a:1/v1, http://b:2/v1"},
        env_file=None,
    )
    assert settings.routes == {"Big": ("http://a:1/v1", "http://b:2/v1"), "tiny": ("http://127.0.0.1:8000/v1",)}


def test_vllm_base_url_is_the_default_route_only_without_model_routes() -> None:
    assert load_settings({"VLLM_BASE_URL": "http://h:1/v1"}, env_file=None).routes == {"default": ("http://h:1/v1",)}
    both = load_settings({"VLLM_BASE_URL": "http://h:1/v1", "MODEL_ROUTE_x": "http://x:1/v1"}, env_file=None)
    assert both.routes == {"x": ("http://x:1/v1",)}


def test_port_falls_back_to_port_and_workers_to_web_concurrency() -> None:
    settings = load_settings({"PORT": "8080", "WEB_CONCURRENCY": "3"}, env_file=None)
    assert (settings.api_port, settings.workers) == (8080, 3)
    settings = load_settings(
        {"API_PORT": "9000", "PORT": "8080", "WORKERS": "2", "WEB_CONCURRENCY": "3"}, env_file=None
    )
    assert (settings.api_port, settings.workers) == (9000, 2)


@pytest.mark.parametrize(("value", "mode"), [(None, "auto"), ("AUTO", "auto"), ("true", "on"), ("0", "off")])
def test_pin_workers_is_auto_or_a_boolean(value: str | None, mode: str) -> None:
    assert load_settings({} if value is None else {"PIN_WORKERS": value}, env_file=None).pin_workers == mode


def test_csv_values() -> None:
    settings = load_settings(
        {"API_KEY": "k1, k2", "ALLOWED_MODELS": "a,b", "ALLOW_ORIGINS": "http://x.test,http://y.test"}, env_file=None
    )
    assert settings.api_keys == ("k1", "k2")
    assert settings.allowed_models == frozenset({"a", "b"})
    assert settings.allow_origins == ("http://x.test", "http://y.test")


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"API_PORT": "http"}, "API_PORT"),
        ({"API_PORT": "70000"}, "API_PORT"),
        ({"WORKERS": "0"}, "WORKERS"),
        ({"READ_TIMEOUT_SECONDS": "soon"}, "READ_TIMEOUT_SECONDS"),
        ({"USE_REDIS": "maybe"}, "USE_REDIS"),
        ({"PIN_WORKERS": "sometimes"}, "PIN_WORKERS"),
        ({"MODEL_ROUTE_x": "localhost:8000/v1"}, "MODEL_ROUTE_x"),
        ({"MODEL_ROUTE_x": "http://:8000/v1"}, "MODEL_ROUTE_x"),
        ({"MODEL_ROUTE_x": "http://127.0.0.1:80000/v1"}, "MODEL_ROUTE_x"),
        ({"VLLM_BASE_URL": "127.0.0.1:8000"}, "VLLM_BASE_URL"),
        ({"MODEL_ROUTE_x": "http://a/v1", "DEFAULT_MODEL_KEY": "y"}, "DEFAULT_MODEL_KEY"),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL"),
        ({"REDIS_URL": "http://127.0.0.1:6379"}, "REDIS_URL"),
        ({"RATE_LIMIT_PER_MIN": "-1"}, "RATE_LIMIT_PER_MIN"),
        ({"REDIS_CLUSTER": "several"}, "REDIS_CLUSTER"),
        ({"REDIS_SENTINELS": "10.0.0.1", "REDIS_SENTINEL_MASTER": "m"}, "REDIS_SENTINELS"),
        ({"REDIS_SENTINELS": "10.0.0.1:99999", "REDIS_SENTINEL_MASTER": "m"}, "REDIS_SENTINELS"),
        ({"REDIS_SENTINELS": ":26379", "REDIS_SENTINEL_MASTER": "m"}, "REDIS_SENTINELS"),
        ({"REDIS_SENTINELS": "10.0.0.1:26379"}, "REDIS_SENTINELS"),  # without the master's name
        ({"REDIS_SENTINEL_MASTER": "m"}, "REDIS_SENTINEL_MASTER"),  # without sentinels to ask
        ({"REDIS_CLUSTER": "true", "REDIS_SENTINELS": "a:1", "REDIS_SENTINEL_MASTER": "m"}, "REDIS_SENTINELS"),
        ({"REDIS_CLUSTER": "true", "REDIS_URL": "redis://127.0.0.1:7000/3"}, "REDIS_URL"),
        ({"REDIS_CLUSTER": "true", "REDIS_URL": "unix:///run/redis.sock"}, "REDIS_URL"),
        ({"REDIS_SENTINELS": "a:1", "REDIS_SENTINEL_MASTER": "m", "REDIS_URL": "unix:///run/redis.sock"}, "REDIS_URL"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(env, env_file=None)
    assert str(caught.value).startswith(named)
    assert "expected" in str(caught.value)


@pytest.mark.parametrize(
    ("name", "accepted"),
    [
        ("RATE_LIMIT_PER_MIN", "from 0 to 10000000"),
        ("API_PORT", "from 1 to 65535"),
        ("WORKERS", "from 1 to 512"),
        ("UPSTREAM_MAX_ATTEMPTS", "from 1 to 10"),
        ("MAX_BODY_BYTES", "from 1024 to 1073741824"),
        ("READ_TIMEOUT_SECONDS", "from 0.001 to 86400"),
        ("REQUEST_HEAD_TIMEOUT_SECONDS", "from 0.05 to 3600"),
        ("REQUEST_BODY_TIMEOUT_SECONDS", "from 0.05 to 3600"),
    ],
)
def test_a_number_out_of_range_is_told_the_range(name: str, accepted: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({name: "100000000000"}, env_file=None)
    assert str(caught.value).startswith(f"{name}='100000000000': expected ")
    assert accepted in str(caught.value)


def test_client_timeouts_and_cors_headers_are_read() -> None:
    settings = load_settings(
        {"REQUEST_HEAD_TIMEOUT_SECONDS": "2.5", "REQUEST_BODY_TIMEOUT_SECONDS": "30", "CORS_ALLOW_HEADERS": "x-a, x-b"},
        env_file=None,
    )
    assert settings.request_head_timeout_seconds == 2.5
    assert settings.request_body_timeout_seconds == 30
    assert settings.cors_allow_headers == ("x-a", "x-b")
    with pytest.raises(SettingsError, match=r"^CORS_ALLOW_HEADERS='x y': expected header names"):
        load_settings({"CORS_ALLOW_HEADERS": "x y"}, env_file=None)


def test_redis_beyond_one_server() -> None:
    assert load_settings({}, env_file=None).redis_sentinels == ()
    cluster = load_settings({"REDIS_CLUSTER": "true", "REDIS_URL": "redis://10.0.0.5:7000"}, env_file=None)
    assert cluster.redis_cluster and cluster.redis_sentinel_master is None
    sentinel = load_settings(
        {"REDIS_SENTINELS": "10.0.0.1:26379, sentinel-b:26380,[::1]:26381", "REDIS_SENTINEL_MASTER": "mymaster"},
        env_file=None,
    )
    assert sentinel.redis_sentinels == (("10.0.0.1", 26379), ("sentinel-b", 26380), ("::1", 26381))
    assert sentinel.redis_sentinel_master == "mymaster" and not sentinel.redis_cluster


def test_environment_wins_over_env_file(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(
        "# comment\nexport API_PORT=6000\nLOG_LEVEL='debug'\nDEFAULT_MODEL_NAME=\"tiny\" \nRATE_LIMIT_PER_MIN=5 # five\n"
    )
    assert read_env_file(env_file)["DEFAULT_MODEL_NAME"] == "tiny"
    settings = load_settings({"API_PORT": "7000"}, env_file=env_file)
    assert settings.api_port == 7000
    assert settings.log_level == "DEBUG"
    assert settings.rate_limit_per_min == 5


def test_a_platforms_port_in_the_environment_wins_over_api_port_in_env_file(tmp_path: Path) -> None:
    # .env copied from .env.example says API_PORT=5050 and WORKERS=2; the platform sets PORT.
    env_file = tmp_path / ".env"
    env_file.write_text("API_PORT=5050\nWORKERS=2\n")
    settings = load_settings({"PORT": "8080", "WEB_CONCURRENCY": "4"}, env_file=env_file)
    assert (settings.api_port, settings.workers) == (8080, 4)
    assert load_settings({}, env_file=env_file).api_port == 5050


def test_malformed_env_file_line_is_reported(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("API_PORT 5050\n")
    with pytest.raises(SettingsError, match=r"\.env:1"):
        load_settings({}, env_file=env_file)


def test_bad_setting_stops_start_up_with_one_line_and_exit_code_2(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway"],
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "API_PORT": "fifty"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "gateway: invalid configuration: API_PORT='fifty': expected an integer from 1 to 65535"
    ]


@pytest.mark.parametrize("host", ["999.1.1.1", "127.0.0.1"])
def test_an_address_that_cannot_be_listened_on_is_one_line_and_exit_code_2(tmp_path: Path, host: str) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        result = subprocess.run(
            [sys.executable, "-m", "gateway"],
            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "API_HOST": host, "API_PORT": str(port)},
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
    finally:
        taken.close()
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"error: cannot listen on API_HOST={host} API_PORT={port}: ")
