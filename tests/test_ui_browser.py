"""The web UI in headless Chromium (Debian's `chromium`, driven by Playwright through `executable_path`; no browser
is downloaded): log in, search, open a multi-platform and a signed image, copy a pull command, delete a tag and
see it gone; a pull-only user gets no delete button and a forged delete is refused; a script label stays text.
Screenshots of the main pages go to tests/artifacts/ui/ (git-ignored), and every page is checked with axe-core,
installed from npm into tests/.cache/axe-core at the first run (`npm install axe-core`)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from prerequisites import installed, missing
from registry_process import implementation
from ui_site import PASSWORDS, SBOM_TYPE, SCRIPT_LABEL, SIGNATURE_TYPE, Site, fill, start

pytestmark = pytest.mark.skipif(implementation() != "ours", reason="the web UI is ours only")

TESTS = Path(__file__).parent
ARTIFACTS = TESTS / "artifacts" / "ui"
AXE_CACHE = TESTS / ".cache" / "axe-core"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
PHONE = {"width": 390, "height": 844}


def axe_source() -> str:
    script = AXE_CACHE / "node_modules" / "axe-core" / "axe.min.js"
    if not script.exists():
        if shutil.which("npm") is None:
            missing("npm is needed to fetch axe-core: apt-get install npm")
        AXE_CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--prefix", str(AXE_CACHE), "axe-core@4"],
            check=True,
            capture_output=True,
            timeout=300,
        )
    return script.read_text()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not installed("playwright"):
        missing("playwright is not installed: pip install -e '.[test]'")
    if not Path(CHROMIUM).exists():
        missing("Debian's chromium is not installed: apt-get install chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    server = start(tmp_path_factory.mktemp("ui-browser"))
    try:
        yield fill(server)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def axe() -> str:
    return axe_source()


def new_page(browser: Any, site: Site, **options: Any) -> Any:
    context = browser.new_context(base_url=site.server.url, **options)
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=site.server.url)
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on(
        "response",
        lambda response: errors.append(f"{response.status} {response.url}") if response.status >= 400 else None,
    )
    page.on("dialog", lambda dialog: (errors.append(f"dialog: {dialog.message}"), dialog.dismiss()))
    page.console_errors = errors
    return page


def log_in(page: Any, user: str) -> None:
    page.goto("/ui/")
    assert "/ui/login" in page.url
    page.get_by_label("User name").fill(user)
    page.get_by_label("Password").fill(PASSWORDS[user])
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/ui/")
    assert page.get_by_text(f"Signed in as {user}").is_visible()


def check_accessibility(page: Any, axe: str, name: str) -> None:
    """axe-core's WCAG 2 A/AA rules find nothing; evaluated through the DevTools protocol, which the page's CSP
    does not govern (the page itself may load no script but its own)."""
    page.evaluate(axe)
    result = page.evaluate("() => axe.run(document, {runOnly: ['wcag2a', 'wcag2aa', 'best-practice']})")
    problems = [(v["id"], v["help"], [n["target"] for n in v["nodes"]][:3]) for v in result["violations"]]
    assert not problems, f"{name}: {problems}"


def snap(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_admin_browses_copies_and_deletes(browser: Any, site: Site, axe: str) -> None:
    page = new_page(browser, site)
    page.goto("/ui/login")
    snap(page, "login")
    check_accessibility(page, axe, "login")
    log_in(page, "admin")
    page.keyboard.press("Tab")
    assert page.evaluate("() => document.activeElement.textContent") == "Skip to content"
    page.keyboard.press("Enter")
    assert page.url.endswith("#main")
    snap(page, "overview")
    check_accessibility(page, axe, "overview")

    page.get_by_role("link", name="Repositories", exact=True).click()
    page.get_by_label("Search repositories").fill("findme")
    page.get_by_role("button", name="Search").click()
    page.wait_for_url("**/ui/repositories?q=findme*")
    assert page.get_by_role("link", name="ui/findme-alpha").is_visible()
    assert page.get_by_role("link", name="ui/other").count() == 0
    snap(page, "repositories-search")
    check_accessibility(page, axe, "repositories")

    page.goto("/ui/repositories/ui/multi")
    assert page.get_by_text("linux/amd64, linux/arm64").is_visible()
    snap(page, "repository-multi")
    check_accessibility(page, axe, "repository")
    page.get_by_role("button", name=f"Copy: docker pull {site.server.host}/ui/multi:latest").click()
    page.get_by_text("Copied").wait_for()
    assert page.evaluate("() => navigator.clipboard.readText()") == f"docker pull {site.server.host}/ui/multi:latest"

    page.get_by_role("link", name="latest", exact=True).click()
    assert page.get_by_role("heading", name="Platforms").is_visible()
    assert page.get_by_role("cell", name="linux/arm64").is_visible()
    snap(page, "image-index")
    check_accessibility(page, axe, "index")

    page.goto("/ui/repositories/ui/signed/-/manifests/v1")
    assert page.get_by_role("heading", name=SIGNATURE_TYPE).is_visible()
    assert page.get_by_role("heading", name=SBOM_TYPE).is_visible()
    assert page.get_by_text("COPY app /bin/app").is_visible()
    snap(page, "image-signed")
    check_accessibility(page, axe, "signed image")

    page.goto("/ui/repositories/ui/other")
    page.get_by_role("link", name="Delete tag to-delete").click()
    assert page.get_by_role("heading", name="Delete tag to-delete in ui/other?").is_visible()
    snap(page, "delete-confirmation")
    check_accessibility(page, axe, "delete confirmation")
    page.get_by_role("button", name="Delete").click()
    page.wait_for_url("**/ui/repositories/ui/other?deleted_tag=*")
    assert page.get_by_role("status").inner_text() == "Deleted tag to-delete."
    assert page.get_by_role("link", name="to-delete", exact=True).count() == 0
    assert page.get_by_role("link", name="v1", exact=True).is_visible()
    assert not page.console_errors, page.console_errors


def test_a_pull_only_user_has_no_delete_and_a_forged_delete_is_refused(browser: Any, site: Site) -> None:
    page = new_page(browser, site)
    log_in(page, "reader")
    page.goto("/ui/repositories")
    assert page.get_by_role("link", name="private/secret").count() == 0
    page.goto("/ui/repositories/ui/findme-alpha")
    assert page.get_by_role("link", name="v1", exact=True).is_visible()
    assert page.get_by_role("link", name=re.compile("^Delete")).count() == 0
    assert page.get_by_role("button", name="Delete", exact=True).count() == 0
    assert page.get_by_role("link", name="Delete tag to-delete").count() == 0
    token = page.locator("input[name=csrf]").first.get_attribute("value")
    answer = page.request.post(
        "/ui/repositories/ui/findme-alpha/-/delete", form={"tag": "v1", "csrf": token}, max_redirects=0
    )
    assert answer.status == 403
    page.reload()
    assert page.get_by_role("link", name="v1", exact=True).is_visible()


def test_a_script_label_is_text_on_a_phone(browser: Any, site: Site, axe: str) -> None:
    page = new_page(browser, site, viewport=PHONE)
    log_in(page, "admin")
    page.goto("/ui/repositories/ui/labels/-/manifests/xss")
    assert page.get_by_text(SCRIPT_LABEL).is_visible()
    assert page.evaluate("() => document.querySelectorAll('main script').length") == 0
    assert page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth + 1"), "no sideways page"
    snap(page, "image-label-phone")
    check_accessibility(page, axe, "labels on a phone")
    assert not page.console_errors, page.console_errors
