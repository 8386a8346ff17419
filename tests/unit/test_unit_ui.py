"""The web UI's pure parts: signed sessions (expiry, tampering, a changed password ends them), CSRF tokens, and
manifests and configs read tolerantly (odd shapes are left out, never an error)."""

from __future__ import annotations

import json

import markupsafe

from docker_registry.server.ui.access import Accounts, Viewer
from docker_registry.server.ui.images import linked_pretty, read_config, read_manifest
from docker_registry.server.ui.pages import UI, newest
from docker_registry.server.ui.rendering import human_size, reveal, short_digest
from docker_registry.server.ui.sessions import Signer

ENTRY = b"$2b$04$abcdefghijklmnopqrstuu"


def entries(user: str) -> bytes | None:
    return ENTRY if user == "alice" else None


def test_a_session_names_its_user_until_it_expires() -> None:
    signer = Signer("secret", 60)
    cookie = signer.session("alice", ENTRY, now=1000)
    assert signer.session_user(cookie, entries, now=1030) == "alice"
    assert signer.session_user(cookie, entries, now=1061) is None


def test_a_tampered_or_foreign_session_is_refused() -> None:
    signer = Signer("secret", 60)
    cookie = signer.session("alice", ENTRY, now=1000)
    encoded, expires, mac = cookie.split(".")
    assert signer.session_user(f"{encoded}.{int(expires) + 999}.{mac}", entries, now=1000) is None
    assert signer.session_user(cookie, entries, now=1000) == "alice"
    assert Signer("other", 60).session_user(cookie, entries, now=1000) is None
    for junk in ("", "a.b", "a.b.c.d", "!!!.1.x", "YWxpY2U.\uff11\uff12.x"):
        assert signer.session_user(junk, entries, now=1000) is None


def test_a_changed_password_or_removed_user_ends_the_session() -> None:
    signer = Signer("secret", 60)
    cookie = signer.session("alice", ENTRY, now=1000)
    assert signer.session_user(cookie, lambda user: b"$2b$04$changed", now=1000) is None
    assert signer.session_user(cookie, lambda user: None, now=1000) is None


def test_csrf_tokens_match_their_cookie_only() -> None:
    signer = Signer("secret", 60)
    cookie = signer.new_csrf_cookie()
    assert signer.csrf_valid(cookie, signer.csrf_token(cookie))
    assert not signer.csrf_valid(cookie, signer.csrf_token(signer.new_csrf_cookie()))
    assert not signer.csrf_valid(None, signer.csrf_token(cookie))
    assert not signer.csrf_valid(cookie, None)


def test_an_index_gives_its_platforms_and_no_size() -> None:
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": "sha256:aa",
                "size": 1,
                "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"},
            },
            {
                "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                "digest": "sha256:bb",
                "size": 1,
                "platform": "odd",
            },
            "not a descriptor",
            {"mediaType": "application/vnd.buildkit.cacheconfig.v0", "digest": "sha256:cc", "size": 3},
        ],
    }
    view = read_manifest("application/vnd.oci.image.index.v1+json", json.dumps(index).encode())
    assert view.platforms == ["linux/arm64/v8"]
    assert [child.digest for child in view.children] == ["sha256:aa", "sha256:bb"]
    assert [blob.digest for blob in view.layers] == ["sha256:cc"]  # no manifest: a blob it lists
    assert view.compressed_size is None


def test_an_image_size_is_its_config_and_layers() -> None:
    image = {
        "config": {"mediaType": "c", "digest": "sha256:cc", "size": 10},
        "layers": [{"mediaType": "l", "digest": "sha256:11", "size": 100}, {"digest": "sha256:22", "size": True}],
        "subject": {"mediaType": "m", "digest": "sha256:ss", "size": 5},
    }
    view = read_manifest("application/vnd.oci.image.manifest.v1+json", json.dumps(image).encode())
    assert view.compressed_size == 110
    assert view.subject is not None
    assert view.artifact_type == "c", "an artifact without artifactType is known by its config's media type"


def test_odd_documents_are_shown_not_failed() -> None:
    assert read_manifest("x/y", b"\xff not json", pretty=True).pretty.startswith("\ufffd")
    deep = b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    assert read_manifest("x/y", deep, pretty=True).pretty == deep.decode()  # deeper than the stack: shown as text
    assert read_config(b'{"config":' + b"[" * 100_000 + b"]" * 100_000 + b"}").labels == {}
    assert read_config(b"[]").labels == {}
    config = read_config(
        json.dumps({"config": {"Labels": {"a": 1}, "Env": ["A=1", 2]}, "history": [{"created": 3}]}).encode()
    )
    assert config.labels == {"a": "1"}
    assert config.env == ["A=1"]
    assert config.history == [("", "")]


def test_hidden_characters_are_written_out_and_markup_is_left_alone() -> None:
    assert reveal("\u202eevil=1") == "\\u202eevil=1"
    assert reveal("a\u200bb\ufeff") == "a\\u200bb\\ufeff"
    assert reveal("plain") == "plain"
    # printable to Python, invisible to a reader: a label key followed by one looked like the real key
    source = "org.opencontainers.image.source"
    assert reveal(source + "\u034f") == source + "\\u034f"
    assert reveal(source + "\ufe0f") == source + "\\ufe0f"
    assert reveal(source + "\U000e0100") == source + "\\U000e0100"
    assert reveal("a\u3164b\x1bc") == "a\\u3164b\\u001bc"
    assert reveal("RUN a &&\n\tb") == "RUN a &&\n\tb"  # a command's lines stay lines
    assert reveal(markupsafe.Markup("<b>x</b>")) == markupsafe.Markup("<b>x</b>")
    assert reveal(3) == 3


def test_sizes_and_digests_for_people() -> None:
    assert human_size(512) == "512 B"
    assert human_size(1536) == "1.5 KiB"
    assert human_size(None) == "—"
    assert short_digest("sha256:0123456789abcdef") == "sha256:0123456789ab"


def test_newest_compares_times_not_their_spelling() -> None:
    assert newest(["2026-01-02T03:04:05Z", "2026-01-02T04:00:00+02:00", "not a time", ""]) == "2026-01-02T03:04:05Z"
    assert newest(["2026-01-02T03:04:05.123456789Z", "2026-01-02T03:04:05Z"]) == "2026-01-02T03:04:05.123456789Z"
    assert newest(["nonsense"]) == ""


def test_linked_pretty_links_descriptor_digests_only() -> None:
    config, layer, subject = "sha256:" + "1" * 64, "sha256:" + "2" * 64, "sha256:" + "3" * 64
    document = {
        "config": {"digest": config, "size": 2},
        "layers": [{"digest": layer, "size": 3}],
        "subject": {"digest": subject, "size": 4},
        "annotations": {"digest": "sha256:" + "4" * 64},
    }
    view = read_manifest("application/vnd.oci.image.manifest.v1+json", json.dumps(document).encode(), pretty=True)
    segments = linked_pretty(view)
    assert "".join(s.text for s in segments) == view.pretty
    assert [(s.digest, s.manifest) for s in segments if s.digest] == [(config, False), (layer, False), (subject, True)]


async def test_an_anonymous_visit_to_a_private_registry_reads_no_repository_name() -> None:
    """The overview looks for a repository an anonymous visitor may see only when some rule lets anonymous pull
    somewhere: every anonymous visit of a private registry read up to 20,000 names (review)."""

    class NoReads:
        async def read(self, *_: object) -> list[str]:
            raise AssertionError("a name was read")

    private = Accounts(_never_checked, lambda _user: None, lambda *_: False, lambda *_: False)
    assert not await UI._sees_any(NoReads(), Viewer(None, private))  # type: ignore[arg-type]


async def _never_checked(*_: str) -> bool:
    raise AssertionError("no password is checked")
