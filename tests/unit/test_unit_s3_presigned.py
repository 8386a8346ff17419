"""The S3 driver's presigned-URL reuse: a URL is handed out again only while most of its validity is left."""

from __future__ import annotations

from docker_registry.drivers.s3 import PRESIGN_REUSE, PRESIGN_SECONDS, PresignedUrls


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_url_is_reused_within_the_window_then_signed_again() -> None:
    clock = Clock()
    urls = PresignedUrls(reuse=300, clock=clock)
    assert urls.get("k") is None
    urls.put("k", "https://s3/k?sig=1")
    clock.now += 299
    assert urls.get("k") == "https://s3/k?sig=1"
    clock.now += 1
    assert urls.get("k") is None  # 300 s old: the caller signs a fresh one


def test_a_reused_url_keeps_most_of_its_validity() -> None:
    assert PRESIGN_SECONDS - PRESIGN_REUSE >= 15 * 60


def test_the_least_recently_used_are_dropped_beyond_the_size() -> None:
    urls = PresignedUrls(size=2, clock=Clock())
    urls.put("a", "ua")
    urls.put("b", "ub")
    assert urls.get("a") == "ua"  # a is now the most recently used
    urls.put("c", "uc")
    assert urls.get("b") is None
    assert (urls.get("a"), urls.get("c")) == ("ua", "uc")
