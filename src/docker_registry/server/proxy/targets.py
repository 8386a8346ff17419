"""Which upstream serves a repository name: all of them in mirror mode, those under a prefix otherwise.

A request names a local repository (`hub/library/alpine`); the upstream knows it as the rest of the name
(`library/alpine`). containerd's mirror requests name the upstream's repository directly and say which registry
they mean in `?ns=` (`?ns=docker.io`): those go to the upstream whose host or prefix is that name, and are stored
under the prefix like any other pull.

Docker Hub keeps its official images under `library/`, and the Docker CLI adds it to a one-part name (`alpine` is
`library/alpine`), but only for Docker Hub itself: a pull of `cache.example/hub/alpine` names `alpine`, which Docker
Hub answers with an authentication error. So, as the CLI does, a one-part name asked of Docker Hub is asked as
`library/<name>` (stored under the name the client used).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .upstream import Upstream

StaleObserver = Callable[[str], None]
"""Told what was served from the cache while the upstream was unavailable: `tag` or `tags` (for metrics)."""
DOCKER_HUB_NAMES = frozenset({"docker.io", "registry-1.docker.io", "index.docker.io"})


@dataclass(frozen=True, slots=True)
class Target:
    upstream: Upstream
    local_name: str
    """Where the cached content is stored and listed (catalog, tags)."""
    remote_name: str
    """What the upstream calls the repository."""
    cache: str
    """The beginning of the local names this upstream's content is cached under: its prefix and a slash, empty for
    a mirror (every name)."""

    def local_link(self, link: str) -> str:
        """An upstream's `Link` to the next page, under the local name."""
        return link.replace(f"/v2/{self.remote_name}/", f"/v2/{self.local_name}/", 1)


class Targets:
    def __init__(self, upstreams: list[Upstream], mirror: bool) -> None:
        self.mirror = mirror
        self._upstreams = upstreams

    def find(self, name: str, ns: str | None = None) -> Target | None:
        """The upstream serving `name`, or None for a local repository."""
        if self.mirror:
            return _target(self._upstreams[0], name, name, "")
        if ns:
            upstream = self._by_namespace(ns)
            if upstream is not None and not name.startswith(upstream.settings.prefix + "/"):
                return _target(upstream, f"{upstream.settings.prefix}/{name}", name, upstream.settings.prefix + "/")
        for upstream in self._upstreams:
            prefix = upstream.settings.prefix + "/"
            if name.startswith(prefix):
                return _target(upstream, name, name.removeprefix(prefix), prefix)
        return None

    @property
    def single(self) -> bool:
        """One upstream only: every blob fetch under way is from it."""
        return len(self._upstreams) == 1

    def is_proxied(self, name: str) -> bool:
        """True when pushes to `name` must be refused (the name is a cache, not a local repository)."""
        return self.mirror or any(name.startswith(u.settings.prefix + "/") for u in self._upstreams)

    def _by_namespace(self, ns: str) -> Upstream | None:
        for upstream in self._upstreams:
            host = upstream.settings.host
            if ns in (host, upstream.settings.prefix) or (ns in DOCKER_HUB_NAMES and host in DOCKER_HUB_NAMES):
                return upstream
        return None


def _target(upstream: Upstream, local_name: str, remote_name: str, cache: str) -> Target:
    if "/" not in remote_name and upstream.settings.host in DOCKER_HUB_NAMES:
        remote_name = f"library/{remote_name}"  # an official image, as the Docker CLI names it
    return Target(upstream, local_name, remote_name, cache)
