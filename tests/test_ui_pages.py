"""The web UI over HTTP against a real server: every page, logins (form and Basic), what a user may not pull is not
shown, deletes need the right, the confirmation and a CSRF token, every name and label is escaped, and the
Content-Security-Policy is strict. The browser run is in test_ui_browser.py."""

from __future__ import annotations

import contextlib
import hashlib
import html
import json
import re
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import bcrypt
import httpx
import pytest
import token_minting as tm

from docker_registry.server.ui.rendering import human_size
from oci_content import OCI_INDEX
from registry_api import image_manifest, index_manifest, push, push_blob
from registry_process import RegistryProcess, implementation
from ui_site import (
    NEWEST_PLATFORM_CREATED,
    PASSWORDS,
    RULES,
    SBOM_TYPE,
    SCRIPT_LABEL,
    SIGNATURE_TYPE,
    Site,
    fill,
    start,
    write_htpasswd,
)

pytestmark = pytest.mark.skipif(implementation() != "ours", reason="the web UI is ours only")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    server = start(tmp_path_factory.mktemp("ui"))
    try:
        yield fill(server)
    finally:
        server.stop()


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, page[:2000]
    return found.group(1)


@contextlib.contextmanager
def logged_in(server: RegistryProcess, user: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        form = client.get("/ui/login")
        assert form.status_code == 200
        answer = client.post(
            "/ui/login?next=/ui/repositories",
            data={"csrf": csrf_of(form.text), "username": user, "password": PASSWORDS[user]},
        )
        assert answer.status_code == 303, answer.text
        assert answer.headers["Location"] == "/ui/repositories"
        cookie = answer.headers["Set-Cookie"]
        assert "HttpOnly" in cookie
        assert "SameSite=Strict" in cookie
        assert "Path=/ui/" in cookie
        yield client


def test_anonymous_is_sent_to_the_login_form(site: Site) -> None:
    with httpx.Client(base_url=site.server.url, timeout=30) as client:
        for path in ("/ui/", "/ui/repositories", "/ui/repositories/ui/multi"):
            answer = client.get(path)
            assert answer.status_code == 303, path
            assert answer.headers["Location"].startswith("/ui/login?next=")
        assert client.get("/ui").status_code == 301


def test_other_methods_are_refused_plainly(site: Site) -> None:
    with httpx.Client(base_url=site.server.url, timeout=30) as client:
        assert client.put("/ui/login").status_code == 405
        assert client.delete("/ui/repositories/ui/multi", auth=("admin", PASSWORDS["admin"])).status_code == 405
        assert client.get("/ui/repositories/ui/multi/-/nothing", auth=("admin", PASSWORDS["admin"])).status_code == 404
        assert client.get("/ui/repositories/Not_A_Name", auth=("admin", PASSWORDS["admin"])).status_code == 404
        assert (
            client.get(
                "/ui/repositories/ui/multi/-/manifests/sha256:zz", auth=("admin", PASSWORDS["admin"])
            ).status_code
            == 404
        )
        assert (
            client.get("/ui/repositories/ui/multi?page=99999999999", auth=("admin", PASSWORDS["admin"])).status_code
            == 200
        )


def test_after_login_the_next_page_stays_under_the_ui(site: Site) -> None:
    with httpx.Client(base_url=site.server.url, timeout=30) as client:
        unsafe = (
            "/ui/%2e%2e/%2e%2e//evil.example",
            "/ui/../v2/",
            "/ui/./..",
            "/ui/.%09./v2/",
            "//evil.example",
            "/ui\\x",
        )
        for target in unsafe:
            form = client.get("/ui/login", params={"next": target})
            answer = client.post(
                "/ui/login",
                params={"next": target},
                data={"csrf": csrf_of(form.text), "username": "reader", "password": PASSWORDS["reader"]},
            )
            assert answer.status_code == 303, answer.text
            assert answer.headers["Location"] == "/ui/", target


def test_a_wrong_password_is_refused(site: Site) -> None:
    with httpx.Client(base_url=site.server.url, timeout=30) as client:
        form = client.get("/ui/login")
        answer = client.post("/ui/login", data={"csrf": csrf_of(form.text), "username": "admin", "password": "no"})
        assert answer.status_code == 401
        assert "Wrong user name or password" in answer.text
        assert "registry_ui_session" not in answer.headers.get("Set-Cookie", "")


def test_login_without_the_csrf_token_is_refused(site: Site) -> None:
    with httpx.Client(base_url=site.server.url, timeout=30) as client:
        client.get("/ui/login")
        answer = client.post("/ui/login", data={"username": "admin", "password": PASSWORDS["admin"]})
        assert answer.status_code == 403


def test_basic_credentials_work_as_the_browser_prompt_sends_them(site: Site) -> None:
    with httpx.Client(base_url=site.server.url, timeout=30) as client:
        prompt = client.get("/ui/login/basic")
        assert prompt.status_code == 401
        assert prompt.headers["WWW-Authenticate"].startswith("Basic ")
        page = client.get("/ui/repositories", auth=("reader", PASSWORDS["reader"]))
        assert page.status_code == 200
        assert "ui/multi" in page.text
        assert client.get("/ui/", auth=("reader", "wrong")).status_code == 401


def test_empty_basic_credentials_are_anonymous_and_never_a_failed_login(site: Site) -> None:
    """`Authorization: Basic Og==` (`:`) is what podman and skopeo send without credentials, and the API takes it as
    anonymous. The UI counted each as a failed login against the limit it shares with the API: a dozen, and the
    API refused the right password from that address (behind a proxy, everyone's) with 429."""
    with httpx.Client(base_url=site.server.url, timeout=30) as client:
        for _ in range(12):
            answer = client.get("/ui/", headers={"Authorization": "Basic Og=="})
            assert answer.status_code == 303  # anonymous: to the login form, not refused
            assert answer.headers["Location"].startswith("/ui/login?next=")
        api = client.get("/v2/ui/multi/tags/list", auth=("admin", PASSWORDS["admin"]))
        assert api.status_code == 200, api.text


def test_a_user_name_beyond_ascii_logs_in_with_basic_credentials(site: Site) -> None:
    """Browsers and clients send Basic credentials in UTF-8, as the API reads them; the UI read them as Latin-1, so
    `jörg` was refused (and each try counted as a failed login)."""
    with httpx.Client(base_url=site.server.url, timeout=30) as client:
        page = client.get("/ui/repositories", auth=("jörg", PASSWORDS["jörg"]))
        assert page.status_code == 200
        assert "ui/multi" in page.text


def test_malformed_forms_cookies_and_tokens_are_refused_not_crashed_on(site: Site) -> None:
    """Each of these was a 500 with a traceback, no login needed: a CSRF token or cookie beyond ASCII (compared
    with `hmac.compare_digest`, which takes ASCII text only), a form body that is not UTF-8 or a multipart body
    without or past its boundary, a session cookie beyond ASCII or with an expiry of 5,000 digits."""
    path = "/ui/repositories/ui/other/-/delete"
    with httpx.Client(base_url=site.server.url, timeout=30) as client:
        client.get("/ui/")
        for form in ({"tag": "x", "csrf": "\u00e9"}, {"tag": "x", "csrf": "%ff"}):
            assert client.post(path, data=form, auth=("admin", PASSWORDS["admin"])).status_code == 403
        for target in (path, "/ui/login", "/ui/logout"):
            for body, content_type in (
                (b"\xff", "application/x-www-form-urlencoded"),
                (b"x", "multipart/form-data"),
                (b"--x\r\nbroken", "multipart/form-data; boundary=x"),
                (b"tag=x", "application/x-www-form-urlencoded; charset=bogus"),
            ):
                headers = {"Content-Type": content_type}
                answer = client.post(target, content=body, headers=headers, auth=("admin", PASSWORDS["admin"]))
                assert answer.status_code == 400, (target, body, answer.status_code, answer.text)
    for cookie in ("YWRtaW4.9999999999.\u00e9", "YWRtaW4." + "9" * 5000 + ".x"):
        with httpx.Client(base_url=site.server.url, timeout=30) as client:
            answer = client.get("/ui/", headers={"Cookie": f"registry_ui_session={cookie}".encode()})
            assert answer.status_code == 303, (cookie[:40], answer.status_code)


def test_pages_answer_head_as_get(site: Site) -> None:
    with httpx.Client(base_url=site.server.url, timeout=30, auth=("admin", PASSWORDS["admin"])) as client:
        for path in ("/ui/repositories/ui/multi", "/ui/repositories/ui/multi/-/manifests/latest"):
            got, head = client.get(path), client.head(path)
            assert got.status_code == head.status_code == 200, (path, head.status_code)
            assert head.content == b""
            assert head.headers["Content-Type"] == got.headers["Content-Type"]


def test_overview_shows_storage_counts_recent_pushes_and_health(site: Site) -> None:
    with logged_in(site.server, "admin") as client:
        page = client.get("/ui/")
        assert page.status_code == 200
        assert "Storage used by blobs" in page.text
        assert "Recent pushes" in page.text
        assert "ui/labels" in page.text
        assert "Healthy" in page.text


def test_repositories_are_searched_on_the_server_and_filtered_by_the_rules(site: Site) -> None:
    with logged_in(site.server, "admin") as admin:
        page = admin.get("/ui/repositories", params={"q": "findme"})
        assert "ui/findme-alpha" in page.text
        assert "ui/other" not in page.text
        everything = admin.get("/ui/repositories").text
        assert "private/secret" in everything
        assert re.search(r"ui/multi</a></td>\s*<td>1</td>", everything), "tag count"
    with logged_in(site.server, "reader") as reader:
        listing = reader.get("/ui/repositories").text
        assert "ui/multi" in listing
        assert "private/secret" not in listing
        assert reader.get("/ui/repositories", params={"q": "secret"}).text.count("private/secret") == 0
        assert reader.get("/ui/repositories/private/secret").status_code == 404
        assert reader.get("/ui/repositories/private/secret/-/manifests/v1").status_code == 404


def test_search_with_like_wildcards_matches_them_literally(site: Site) -> None:
    with logged_in(site.server, "admin") as admin:
        assert "No repository matches" in admin.get("/ui/repositories", params={"q": "%"}).text
        assert "No repository matches" in admin.get("/ui/repositories", params={"q": "ui_multi"}).text


def test_repository_page_lists_tags_platforms_sizes_and_pull_commands(site: Site) -> None:
    with logged_in(site.server, "admin") as client:
        page = client.get("/ui/repositories/ui/multi").text
        assert "linux/amd64, linux/arm64" in page
        assert re.search(r"\d+\.\d KiB <span class=\"type\">\(all platforms\)", page), "the children's sizes"
        assert "application/vnd.oci.image.index.v1+json" in page
        host = site.server.host
        assert f"docker pull {host}/ui/multi:latest" in page
        assert f"podman pull {host}/ui/multi:latest" in page
        assert f"docker pull {host}/ui/multi@{site.multi.digest}" in page
        signed = client.get("/ui/repositories/ui/signed", params={"sort": "name"}).text
        assert "2026-01-02T03:04:05Z" in signed, "created time from the image config"
        assert "KiB" in signed


def test_image_page_shows_config_layers_platforms_and_referrers(site: Site) -> None:
    with logged_in(site.server, "admin") as client:
        index = client.get("/ui/repositories/ui/multi/-/manifests/latest").text
        assert "Platforms" in index
        assert "linux/arm64" in index
        image = client.get(f"/ui/repositories/ui/signed/-/manifests/{site.signed.digest}").text
        assert "/bin/app" in image
        assert "COPY app /bin/app" in image
        assert "org.opencontainers.image.title" in image
        assert SIGNATURE_TYPE in image
        assert SBOM_TYPE in image
        assert site.signature.digest[:19] in image
        assert "&#34;schemaVersion&#34;: 2" in image or '"schemaVersion": 2' in image.replace("&#34;", '"')


def blob_url(repository: str, digest: str) -> str:
    return f"/ui/repositories/{repository}/-/blobs/{quote(digest)}"


def pretty_manifest(page: str) -> str:
    found = re.search(r'<pre class="manifest"[^>]*>(.*?)</pre>', page, re.S)
    assert found, page[:2000]
    return found.group(1)


def blobs_of(body: bytes) -> list[dict[str, object]]:
    manifest = json.loads(body)
    return [manifest["config"], *manifest["layers"]]


def test_every_descriptor_links_to_its_blob_or_manifest_and_downloads_the_exact_bytes(site: Site) -> None:
    with logged_in(site.server, "reader") as client:
        page = client.get(f"/ui/repositories/ui/signed/-/manifests/{site.signed.digest}").text
        pretty = pretty_manifest(page)
        descriptors = blobs_of(site.signed.body)
        assert len(descriptors) == 2
        for descriptor in descriptors:
            digest = str(descriptor["digest"])
            link = f'href="{blob_url("ui/signed", digest)}"'
            assert link in pretty, "the pretty-printed manifest links the descriptor"
            places = 2 if descriptor is descriptors[0] else 3  # the manifest, the descriptors, the layers table
            assert page.count(link) == places
            answer = client.get(blob_url("ui/signed", digest))
            assert answer.status_code == 200
            assert f"sha256:{hashlib.sha256(answer.content).hexdigest()}" == digest
            assert len(answer.content) == descriptor["size"]
            assert answer.headers["Content-Type"] == "application/octet-stream"
            assert answer.headers["Content-Disposition"] == f'attachment; filename="{digest.replace(":", "-")}"'
            assert answer.headers["X-Content-Type-Options"] == "nosniff"
            assert "default-src 'none'" in answer.headers["Content-Security-Policy"]
        signature = pretty_manifest(client.get(f"/ui/repositories/ui/signed/-/manifests/{site.signature.digest}").text)
        assert f'href="/ui/repositories/ui/signed/-/manifests/{quote(site.signed.digest)}"' in signature, "subject"
        index = pretty_manifest(client.get("/ui/repositories/ui/multi/-/manifests/latest").text)
        for child in json.loads(site.multi.body)["manifests"]:
            assert f'href="/ui/repositories/ui/multi/-/manifests/{quote(child["digest"])}"' in index


def test_blob_downloads_follow_the_rules_and_the_repository(site: Site) -> None:
    with httpx.Client(base_url=site.server.url, auth=("admin", PASSWORDS["admin"]), timeout=30) as api:
        secret = api.get(
            "/v2/private/secret/manifests/v1", headers={"Accept": "application/vnd.oci.image.manifest.v1+json"}
        )
        child = json.loads(site.multi.body)["manifests"][0]["digest"]
        multi_child = api.get(
            f"/v2/ui/multi/manifests/{child}", headers={"Accept": "application/vnd.oci.image.manifest.v1+json"}
        )
    secret_layer = str(blobs_of(secret.content)[1]["digest"])
    multi_layer = str(blobs_of(multi_child.content)[1]["digest"])
    signed_layer = str(blobs_of(site.signed.body)[1]["digest"])
    with httpx.Client(base_url=site.server.url, timeout=30) as anonymous:
        refused = anonymous.get(blob_url("ui/signed", signed_layer))
        assert refused.status_code == 401
        assert refused.headers["WWW-Authenticate"].startswith("Basic ")
        assert signed_layer not in refused.text
    with logged_in(site.server, "reader") as reader:
        assert reader.get(blob_url("private/secret", secret_layer)).status_code == 404
        assert reader.get(blob_url("ui/multi", multi_layer)).status_code == 200
    with logged_in(site.server, "admin") as admin:
        assert admin.get(blob_url("private/secret", secret_layer)).status_code == 200
        not_here = admin.get(blob_url("ui/signed", multi_layer))
        assert not_here.status_code == 404, "a blob of another repository"
        assert "No such blob" in not_here.text
        assert admin.get(blob_url("ui/signed", "sha256:" + "0" * 64)).status_code == 404
        assert admin.get(blob_url("ui/signed", "sha256:zz")).status_code == 404


def test_an_index_shows_when_its_newest_platform_image_was_built(site: Site) -> None:
    with logged_in(site.server, "reader") as client:
        repository = client.get("/ui/repositories/ui/multi").text
        assert NEWEST_PLATFORM_CREATED in repository
        index = client.get("/ui/repositories/ui/multi/-/manifests/latest").text
        assert f"{NEWEST_PLATFORM_CREATED} (the newest platform image)" in index


def test_an_index_of_blobs_lists_them_as_blobs_to_download(site: Site) -> None:
    """BuildKit's registry cache is an index whose entries are its layers and cache config: they are blobs to
    download, not platforms whose manifest pages would say there is no such manifest."""
    blobs = [b"cache layer" * 100, b'{"layers":[],"records":[]}']
    types = ["application/vnd.oci.image.layer.v1.tar+gzip", "application/vnd.buildkit.cacheconfig.v0"]
    with httpx.Client(base_url=site.server.url, auth=("admin", PASSWORDS["admin"]), timeout=30) as admin:
        entries = [
            {"mediaType": kind, "digest": push_blob(admin, "ui/cache", blob), "size": len(blob)}
            for kind, blob in zip(types, blobs, strict=True)
        ]
        index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}).encode()
        put = admin.put("/v2/ui/cache/manifests/buildcache", content=index, headers={"Content-Type": OCI_INDEX})
        assert put.status_code == 201, put.text
    with logged_in(site.server, "reader") as client:
        page = client.get("/ui/repositories/ui/cache/-/manifests/buildcache").text
        assert "<h2>Blobs</h2>" in page
        assert "<h2>Platforms</h2>" not in page
        for entry, blob in zip(entries, blobs, strict=True):
            link = f"/ui/repositories/ui/cache/-/blobs/{quote(entry['digest'])}"
            assert f'href="{link}" download' in page
            assert client.get(link).content == blob
        tags = client.get("/ui/repositories/ui/cache").text  # the tag's size: the blobs it lists
        assert human_size(sum(map(len, blobs))) in tags


def test_pushed_content_that_is_deep_huge_or_hidden_leaves_the_pages_whole(site: Site) -> None:
    """What anyone who may push controls, shown to whoever may pull: a config nested deeper than Python's stack
    (a 500 on the repository and image pages), an index of many platforms (each child read and its platforms
    listed on every tag row), and characters that hide or reverse text (`\u202eevil=1` showed as `1=live`)."""
    with httpx.Client(base_url=site.server.url, auth=("admin", PASSWORDS["admin"]), timeout=60) as admin:
        deep = b'{"architecture":"amd64","os":"linux","config":{"Labels":' + b"[" * 100_000 + b"]" * 100_000 + b"}}"
        push(admin, "ui/odd", image_manifest(admin, "ui/odd", config=deep), "deep")
        hidden = image_manifest(admin, "ui/odd", annotations={"org.example.note": "abc\u202edef", "a\u200bb": "x"})
        push(admin, "ui/odd", hidden, "hidden")
        children = [image_manifest(admin, "ui/odd") for _ in range(70)]
        for child in children:
            push(admin, "ui/odd", child)
        many = json.loads(index_manifest(children).body)
        for number, child in enumerate(many["manifests"]):
            child["platform"] = {"os": "linux", "architecture": f"arch{number}"}
        body = json.dumps(many).encode()
        put = admin.put("/v2/ui/odd/manifests/many", content=body, headers={"Content-Type": OCI_INDEX})
        assert put.status_code == 201, put.text
    with logged_in(site.server, "reader") as client:
        listing = client.get("/ui/repositories/ui/odd")
        assert listing.status_code == 200
        assert "54 more" in listing.text  # 16 platforms, then the count of the others
        assert client.get("/ui/repositories/ui/odd/-/manifests/deep").status_code == 200
        page = client.get("/ui/repositories/ui/odd/-/manifests/hidden").text
        assert "abc\\u202edef" in page
        assert "\u202e" not in page
        assert "a\\u200bb" in page


def test_a_page_of_repositories_stops_reading_names_and_its_link_names_none_hidden(tmp_path: Path) -> None:
    """21,000 repositories the reader may not pull sort before the one they may: the first page stops after 20,000
    names with a link that goes on from there, the place sealed (before: every name read, seconds a page; then a
    link naming the last hidden name read)."""
    server = start(tmp_path)
    try:
        with httpx.Client(base_url=server.url, auth=("admin", PASSWORDS["admin"]), timeout=30) as admin:
            push(admin, "ui/visible", image_manifest(admin, "ui/visible"), "v1")
        with sqlite3.connect(server.data_dir / "registry.db") as db:  # as many pushes would leave them
            db.executemany(
                "INSERT INTO repositories (name, created_at) VALUES (?, 0)",
                [(f"hidden/r{number:05d}",) for number in range(21_000)],
            )
        with logged_in(server, "reader") as client:
            first = client.get("/ui/repositories")
            assert first.status_code == 200
            assert "ui/visible" not in first.text
            assert "hidden/" not in first.text
            link = re.search(r'href="(/ui/repositories\?[^"]*from=[^"]+)"', first.text)
            assert link, first.text[-2000:]
            assert "hidden" not in html.unescape(link.group(1))
            second = client.get(html.unescape(link.group(1)))
            assert "ui/visible" in second.text
            assert "hidden/" not in second.text
    finally:
        server.stop()


def test_what_a_page_shows_of_huge_content_is_bounded(site: Site) -> None:
    """Anyone who may push made one view cost seconds and hundreds of MiB of a worker (then all viewers): an index
    of thousands of entries rendered whole (18 MB of HTML), referrers with megabytes of annotations each, fifty
    manifests of 4 MiB read for one tag list. Now a manifest's text is shown up to 512 KiB (then linked for
    download), its entries up to 1,000 (then counted), annotations cut at 512 characters; a tag list does not
    read a manifest larger than 256 KiB."""
    with httpx.Client(base_url=site.server.url, auth=("admin", PASSWORDS["admin"]), timeout=60) as admin:
        child = image_manifest(admin, "ui/huge")
        push(admin, "ui/huge", child)
        entry = {**child.as_descriptor(), "platform": {"os": "linux", "architecture": "amd64"}}
        body = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry] * 3000}).encode()
        assert len(body) > 512 * 1024
        put = admin.put("/v2/ui/huge/manifests/wide", content=body, headers={"Content-Type": OCI_INDEX})
        assert put.status_code == 201, put.text
        noted = image_manifest(admin, "ui/huge", subject=child, annotations={"org.example.notes": "n" * 100_000})
        push(admin, "ui/huge", noted)
    with logged_in(site.server, "reader") as client:
        wide = client.get("/ui/repositories/ui/huge/-/manifests/wide")
        assert wide.status_code == 200
        assert "too large to show here" in wide.text
        assert "2000 more entries are not listed here" in wide.text
        assert len(wide.content) < 2 * 1024 * 1024
        download = client.get(f"/ui/repositories/ui/huge/-/blobs/sha256:{hashlib.sha256(body).hexdigest()}")
        assert download.content == body
        signed = client.get(f"/ui/repositories/ui/huge/-/manifests/{child.digest}")
        assert signed.status_code == 200
        assert "n" * 512 + " …" in signed.text
        assert "n" * 513 not in signed.text
        listing = client.get("/ui/repositories/ui/huge")
        assert listing.status_code == 200
        assert ">wide<" in listing.text


def test_a_script_label_is_shown_as_text(site: Site) -> None:
    with logged_in(site.server, "admin") as client:
        page = client.get("/ui/repositories/ui/labels/-/manifests/xss")
        assert SCRIPT_LABEL not in page.text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
        assert "MODE=&lt;b&gt;bold&lt;/b&gt;" in page.text
        policy = page.headers["Content-Security-Policy"]
        assert "script-src 'self'" in policy
        assert "default-src 'none'" in policy
        assert "unsafe-inline" not in policy
        assert page.headers["X-Content-Type-Options"] == "nosniff"


def test_a_search_term_is_escaped(site: Site) -> None:
    with logged_in(site.server, "admin") as client:
        page = client.get("/ui/repositories", params={"q": '"><script>x()</script>'}).text
        assert "<script>x()" not in page
        assert "&lt;script&gt;x()" in page


def test_static_files_come_from_the_registry(site: Site) -> None:
    with httpx.Client(base_url=site.server.url, timeout=30) as client:
        assert client.get("/ui/static/ui.js").headers["Content-Type"].startswith("text/javascript")
        assert client.get("/ui/static/ui.css").status_code == 200
    with logged_in(site.server, "admin") as admin:
        page = admin.get("/ui/").text
        outside = page.replace(site.server.url, "")
        assert "http://" not in outside
        assert "https://" not in outside


def test_delete_a_tag_with_confirmation_and_csrf(site: Site) -> None:
    with logged_in(site.server, "admin") as client:
        confirm = client.get("/ui/repositories/ui/other/-/delete", params={"tag": "to-delete"})
        assert confirm.status_code == 200
        assert "garbage collection" in confirm.text
        no_token = client.post("/ui/repositories/ui/other/-/delete", data={"tag": "to-delete"})
        assert no_token.status_code == 403
        cross_site = client.post(
            "/ui/repositories/ui/other/-/delete",
            data={"tag": "to-delete", "csrf": csrf_of(confirm.text)},
            headers={"Origin": "https://evil.example"},
        )
        assert cross_site.status_code == 403
        # a confirmation names a well-formed tag or digest only: a crafted link puts no words of its own there
        crafted_confirm = client.get("/ui/repositories/ui/other/-/delete", params={"tag": "all tags, then call us"})
        assert crafted_confirm.status_code == 404
        assert "call us" not in crafted_confirm.text
        assert client.get("/v2/ui/other/manifests/to-delete", auth=("admin", PASSWORDS["admin"])).status_code == 200
        done = client.post(
            "/ui/repositories/ui/other/-/delete", data={"tag": "to-delete", "csrf": csrf_of(confirm.text)}
        )
        assert done.status_code == 303
        after = client.get(done.headers["Location"]).text
        assert "Deleted tag to-delete" in after
        crafted = client.get("/ui/repositories/ui/other", params={"deleted_tag": "x, call +1-555 now"}).text
        assert "call +1-555" not in crafted
        assert ">to-delete</a>" not in after
        assert client.get("/v2/ui/other/manifests/to-delete", auth=("admin", PASSWORDS["admin"])).status_code == 404


def test_delete_a_manifest_by_digest(site: Site) -> None:
    with httpx.Client(base_url=site.server.url, auth=("admin", PASSWORDS["admin"]), timeout=30) as api:
        image = image_manifest(api, "ui/doomed")
        push(api, "ui/doomed", image, "gone")
    with logged_in(site.server, "admin") as client:
        confirm = client.get("/ui/repositories/ui/doomed/-/delete", params={"digest": image.digest})
        done = client.post(
            "/ui/repositories/ui/doomed/-/delete", data={"digest": image.digest, "csrf": csrf_of(confirm.text)}
        )
        assert done.status_code == 303
        assert client.get(f"/ui/repositories/ui/doomed/-/manifests/{image.digest}").status_code == 404


def test_a_pull_only_user_sees_no_delete_and_is_refused(site: Site) -> None:
    with logged_in(site.server, "reader") as client:
        page = client.get("/ui/repositories/ui/findme-alpha")
        assert page.status_code == 200
        assert "Delete" not in page.text
        assert "Delete" not in client.get("/ui/repositories/ui/findme-alpha/-/manifests/v1").text
        token = csrf_of(page.text)
        refused = client.post("/ui/repositories/ui/findme-alpha/-/delete", data={"tag": "v1", "csrf": token})
        assert refused.status_code == 403
        assert client.get("/ui/repositories/ui/findme-alpha/-/manifests/v1").status_code == 200


def test_logout_ends_the_session(site: Site) -> None:
    with logged_in(site.server, "admin") as client:
        page = client.get("/ui/")
        answer = client.post("/ui/logout", data={"csrf": csrf_of(page.text)})
        assert answer.status_code == 303
        assert client.get("/ui/").status_code == 303


def test_a_forged_session_cookie_is_ignored(site: Site) -> None:
    with httpx.Client(base_url=site.server.url, timeout=30) as client:
        client.cookies.set("registry_ui_session", "YWRtaW4.9999999999.forged", path="/ui/")
        assert client.get("/ui/").status_code == 303


def test_deletes_disabled_hide_the_button(tmp_path: Path) -> None:
    server = start(tmp_path, delete_enabled=False)
    try:
        with httpx.Client(base_url=server.url, auth=("admin", PASSWORDS["admin"]), timeout=30) as api:
            push(api, "ui/kept", image_manifest(api, "ui/kept"), "v1")
        with logged_in(server, "admin") as client:
            page = client.get("/ui/repositories/ui/kept")
            assert "Delete" not in page.text
            refused = client.post("/ui/repositories/ui/kept/-/delete", data={"tag": "v1", "csrf": csrf_of(page.text)})
            assert refused.status_code == 403
    finally:
        server.stop()


def test_ui_enabled_false_turns_it_off_and_no_auth_shows_everything(make_registry: object) -> None:
    off = make_registry(extra_config={"ui": {"enabled": False}})  # type: ignore[operator]
    on = make_registry()  # type: ignore[operator]
    with httpx.Client(timeout=30) as client:
        assert client.get(f"{off.url}/ui/").status_code == 404
        with httpx.Client(base_url=on.url, timeout=30) as api:
            push(api, "open/repo", image_manifest(api, "open/repo"), "v1")
        page = client.get(f"{on.url}/ui/repositories")
        assert page.status_code == 200
        assert "open/repo" in page.text
        assert "Delete" in client.get(f"{on.url}/ui/repositories/open/repo").text


def test_token_mode_logs_in_with_the_built_in_service_users_or_says_why_not(tmp_path: Path) -> None:
    keys = tm.TokenKeys.make(tmp_path / "keys")
    htpasswd = write_htpasswd(tmp_path / "htpasswd")
    token = {"service": "s", "issuer": "i", "realm": "https://a/t", "rootcertbundle": str(keys.bundle)}
    outside = RegistryProcess(tmp_path / "outside", extra_config={"auth": {"token": token}}).start()
    built_in = dict(token, issue={"key": str(keys.service_key_path), "htpasswd": str(htpasswd)})
    del built_in["realm"], built_in["rootcertbundle"]
    inside = RegistryProcess(tmp_path / "inside", extra_config={"auth": {"token": built_in}, "access": RULES}).start()
    try:
        refused = httpx.get(f"{outside.url}/ui/", timeout=30)
        assert refused.status_code == 501
        assert "auth.htpasswd" in refused.text
        with logged_in(inside, "reader") as client:
            assert client.get("/ui/repositories").status_code == 200
    finally:
        outside.stop()
        inside.stop()


def test_a_changed_password_ends_the_ui_session(tmp_path: Path) -> None:
    server = start(tmp_path)
    try:
        with logged_in(server, "reader") as client:
            assert client.get("/ui/repositories").status_code == 200
            htpasswd = tmp_path / "htpasswd"
            lines = htpasswd.read_text().splitlines(keepends=True)
            changed = bcrypt.hashpw(b"new-password", bcrypt.gensalt(4)).decode()
            htpasswd.write_text(
                "".join(f"reader:{changed}\n" if line.startswith("reader:") else line for line in lines)
            )
            deadline = time.monotonic() + 15
            while client.get("/ui/repositories").status_code == 200:  # each worker re-reads the file within 1 s
                assert time.monotonic() < deadline, "the old session still works"
                time.sleep(0.2)
            time.sleep(1.5)  # every worker has looked at the file again by now
            for _ in range(4):
                assert client.get("/ui/repositories").headers["Location"].startswith("/ui/login")
    finally:
        server.stop()


def test_an_anonymous_visitor_who_may_see_a_repository_gets_the_overview(tmp_path: Path) -> None:
    """Anonymous visitors are sent to the login form only when they may see nothing: one allowed to pull
    `public/*` was sent there whenever the latest fifty pushes were all to repositories it may not see."""
    htpasswd = write_htpasswd(tmp_path / "htpasswd")
    rules = [*RULES, {"who": "anonymous", "repositories": ["public/*"], "actions": ["pull"]}]
    extra = {"auth": {"htpasswd": {"realm": "ui-tests", "path": str(htpasswd)}}, "access": rules}
    server = RegistryProcess(tmp_path / "registry", extra_config=extra).start()
    try:
        with httpx.Client(base_url=server.url, auth=("admin", PASSWORDS["admin"]), timeout=30) as api:
            push(api, "public/app", image_manifest(api, "public/app"), "v1")
            private = image_manifest(api, "private/app")
            for n in range(55):
                push(api, "private/app", private, f"t{n}")
        with httpx.Client(base_url=server.url, timeout=30) as anonymous:
            overview = anonymous.get("/ui/")
            assert overview.status_code == 200, overview.headers
            assert "private/app" not in overview.text
    finally:
        server.stop()


def test_ui_pages_answer_as_pages_for_every_path_and_method(site: Site) -> None:
    """A HEAD of a download link is answered as its GET is (it was a 404); a POST to a manifest's page is 405 with
    Allow (it was a 404); a path under /ui/ that is no page is the UI's 404 page, with its security headers (it was
    the API's JSON error, without them)."""
    with logged_in(site.server, "reader") as client:
        config = json.loads(site.multi.body)["manifests"][0]
        head = client.head(f"/ui/repositories/ui/multi/-/blobs/{config['digest']}")
        assert head.status_code == 200
        assert int(head.headers["Content-Length"]) == config["size"]
        post = client.post(f"/ui/repositories/ui/multi/-/manifests/{site.multi.digest}")
        assert post.status_code == 405
        assert post.headers["Allow"] == "GET,HEAD"
        nothing = client.get("/ui/nope")
        assert nothing.status_code == 404
        assert nothing.headers["Content-Type"].startswith("text/html")
        assert "frame-ancestors 'none'" in nothing.headers["Content-Security-Policy"]
