"""The `notifications` section: Distribution's endpoint keys as its files write them, our `maxage` and `batch`,
and the mistakes an operator gets told about by key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from docker_registry.core.exceptions import ConfigError
from docker_registry.server.config import Config, dump, load
from docker_registry.server.notifications import setup as notifications_setup

DISTRIBUTION_STYLE = """
version: 0.1
notifications:
  events:
    includereferences: true
  endpoints:
    - name: alistener
      disabled: false
      url: https://my.listener.com/event
      headers:
        Authorization: [Bearer your-token]
      timeout: 1s
      threshold: 10
      backoff: 1s
      ignoredmediatypes:
        - application/octet-stream
      ignore:
        mediatypes:
           - application/octet-stream
        actions:
           - pull
"""


def load_text(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "config.yml"
    path.write_text(text)
    return load(str(path), {})


def test_distributions_example_loads(tmp_path: Path) -> None:
    config = load_text(tmp_path, DISTRIBUTION_STYLE)
    notifications = config.notifications
    (endpoint,) = notifications.enabled
    assert endpoint.name == "alistener"
    assert endpoint.headers == {"Authorization": ["Bearer your-token"]}
    assert (endpoint.timeout, endpoint.threshold, endpoint.backoff, endpoint.batch) == (1.0, 10, 1.0, 1)
    assert notifications.events.includereferences is True
    assert notifications.events.maxage == 7 * 24 * 3600
    assert endpoint.ignores("pull", "application/vnd.oci.image.manifest.v1+json")
    assert endpoint.ignores("push", "application/octet-stream")
    assert not endpoint.ignores("push", "application/vnd.oci.image.manifest.v1+json")
    assert config.notices == []


def test_header_values_are_masked_in_config_output(tmp_path: Path) -> None:
    config = load_text(tmp_path, DISTRIBUTION_STYLE)
    shown = yaml.safe_dump(dump(config))
    assert "your-token" not in shown
    assert "Authorization" in shown
    assert "your-token" in yaml.safe_dump(dump(config, show_secrets=True))


def test_a_password_in_an_endpoint_url_is_masked_in_config_output(tmp_path: Path) -> None:
    text = DISTRIBUTION_STYLE.replace("https://my.listener.com/event", "https://hooks:pa55word@my.listener.com/event")
    config = load_text(tmp_path, text)
    shown = yaml.safe_dump(dump(config))
    assert "pa55word" not in shown
    assert "https://hooks:***@my.listener.com/event" in shown
    assert "pa55word" in yaml.safe_dump(dump(config, show_secrets=True))


def test_a_token_in_an_endpoint_or_health_check_url_and_check_headers_are_masked_in_config_output(
    tmp_path: Path,
) -> None:
    """`config` showed a receiver's `?token=`, a `health.http` URL's password and its headers' values."""
    text = DISTRIBUTION_STYLE.replace("https://my.listener.com/event", "https://my.listener.com/event?token=t0ken-1")
    config = load_text(tmp_path, text)
    shown = yaml.safe_dump(dump(config))
    assert "t0ken-1" not in shown
    assert "https://my.listener.com/event?token=***" in shown
    assert "t0ken-1" in yaml.safe_dump(dump(config, show_secrets=True))
    check = {"uri": "https://u:pa55@auth.internal/health?key=k3y", "headers": {"Authorization": ["Bearer b3arer"]}}
    config = load_text(tmp_path, yaml.safe_dump({"version": 0.1, "health": {"http": [check]}}))
    shown = yaml.safe_dump(dump(config))
    for secret in ("pa55", "k3y", "b3arer"):
        assert secret not in shown
    assert "https://u:***@auth.internal/health?key=***" in shown
    assert "b3arer" in yaml.safe_dump(dump(config, show_secrets=True))


def test_disabled_endpoints_record_nothing(tmp_path: Path) -> None:
    config = load_text(tmp_path, DISTRIBUTION_STYLE.replace("disabled: false", "disabled: true"))
    assert config.notifications.enabled == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("url: https://my.listener.com/event", "url: ftp://x/"),
        ("actions:\n           - pull", "actions:\n           - pul"),
        ("threshold: 10", "threshold: 0"),
        ("timeout: 1s", "timeout: soon"),
    ],
)
def test_mistakes_name_their_key(tmp_path: Path, change: str, message: str) -> None:
    with pytest.raises(ConfigError, match=r"notifications\.endpoints"):
        load_text(tmp_path, DISTRIBUTION_STYLE.replace(change, message))


def test_endpoint_names_must_differ(tmp_path: Path) -> None:
    twice = DISTRIBUTION_STYLE + "    - name: alistener\n      url: http://other/\n"
    with pytest.raises(ConfigError, match="used twice"):
        load_text(tmp_path, twice)


def test_delivery_nice_defaults_to_10_and_takes_0_to_19(tmp_path: Path) -> None:
    assert load_text(tmp_path, DISTRIBUTION_STYLE).notifications.delivery.nice == 10
    assert load(None, {"REGISTRY_NOTIFICATIONS_DELIVERY_NICE": "0"}).notifications.delivery.nice == 0
    for wrong in ("20", "-1", "true", "low"):
        with pytest.raises(ConfigError, match=r"notifications\.delivery\.nice.*from 0 to 19"):
            load_text(tmp_path, DISTRIBUTION_STYLE + f"  delivery:\n    nice: {wrong}\n")


@pytest.mark.parametrize(("workers", "endpoints", "own"), [(2, True, True), (1, True, False), (2, False, False)])
def test_delivery_has_its_own_process_with_an_endpoint_and_more_than_one_worker(
    tmp_path: Path, workers: int, endpoints: bool, own: bool
) -> None:
    text = DISTRIBUTION_STYLE if endpoints else "version: 0.1\n"
    config = load_text(tmp_path, text + f"http:\n  workers: {workers}\n")
    assert notifications_setup.in_own_process(config) is own
