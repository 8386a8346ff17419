"""Log lines as `log.formatter` writes them, and what the access log shows of a request's target."""

from __future__ import annotations

import json
import logging
import shlex
import subprocess
import sys

import pytest
from aiohttp.test_utils import make_mocked_request

from docker_registry.server.config import LogConfig
from docker_registry.server.runtime.logs import FIELDS, TEXT, formatter, loggable_target


def _record(message: str, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("docker_registry.test", logging.WARNING, __file__, 1, message, (), None)
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def _config(name: str) -> LogConfig:
    return LogConfig.model_validate({"formatter": name, "fields": {"service": "registry"}})


def test_json_lines_carry_level_fields_and_the_record_fields() -> None:
    line = formatter(_config("json")).format(_record('said "hi"\nthen left', **{FIELDS: {"http.request.id": "x1"}}))
    parsed = json.loads(line)
    assert "\n" not in line
    assert parsed["msg"] == 'said "hi"\nthen left'
    assert parsed["level"] == "warn"
    assert parsed["service"] == "registry"
    assert parsed["http.request.id"] == "x1"


def test_logfmt_quotes_what_needs_quoting() -> None:
    line = formatter(_config("logfmt")).format(_record("two words", **{FIELDS: {"uri": "/v2/a=b", "n": 3}}))
    pairs = dict(pair.split("=", 1) for pair in shlex.split(line))
    assert pairs["msg"] == "two words"
    assert pairs["uri"] == "/v2/a=b"
    assert pairs["n"] == "3"
    assert pairs["service"] == "registry"
    assert "\n" not in line


def test_text_lines_show_an_access_record_s_own_text() -> None:
    line = formatter(_config("text")).format(_record("response completed", **{TEXT: '"GET /v2/ HTTP/1.1" 200'}))
    assert line.endswith('docker_registry.test: "GET /v2/ HTTP/1.1" 200 service=registry')


@pytest.mark.parametrize(
    ("target", "shown"),
    [
        ("/v2/", "/v2/"),
        ("/v2/_catalog?n=5&last=a", "/v2/_catalog?n=5&last=a"),
        ("/v2/r/blobs/x?access_token=abc&n=1", "/v2/r/blobs/x?access_token=REDACTED&n=1"),
        (
            "/v2/r/blobs/x?X-Amz-Signature=abc&X-Amz-Credential=def",
            "/v2/r/blobs/x?X-Amz-Signature=REDACTED&X-Amz-Credential=REDACTED",
        ),
        ("/v2/?PASSWORD=abc&apikey=1&session_id=2", "/v2/?PASSWORD=REDACTED&apikey=REDACTED&session_id=REDACTED"),
        ("/v2/%2F?q=%22", "/v2/%2F?q=%22"),
    ],
)
def test_the_target_never_shows_a_secret_looking_parameter_s_value(target: str, shown: str) -> None:
    assert loggable_target(make_mocked_request("GET", target)) == shown


@pytest.mark.parametrize(("level", "shown"), [("info", False), ("debug", True)])
def test_alembic_plugin_lines_only_at_debug(level: str, shown: bool) -> None:
    """Every start logged seven "setup plugin alembic.autogenerate..." lines per process (the master and each worker)
    at INFO: noise before the registry's own lines. Alembic sets its plugins up once, when a process imports it."""
    script = (
        "from docker_registry.server.config import LogConfig\n"
        "from docker_registry.server.runtime import logs\n"
        f"logs.setup(LogConfig.model_validate({{'level': {level!r}}}))\n"
        "import logging\n"
        "logging.getLogger('alembic.runtime.migration').info('still shown')\n"
        "import alembic.autogenerate\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    assert "still shown" in result.stderr
    assert ("setup plugin" in result.stderr) is shown, result.stderr
