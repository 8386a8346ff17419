"""Content of the pull-through cache expires: which repositories a proxy serves and for how long their content is
kept after its last pull, read from the `proxy` section (this feature does not import the proxy's)."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import Config


@dataclass(frozen=True, slots=True)
class CachedScope:
    prefix: str
    """Repositories under `prefix/` are cached from an upstream; "" is every repository (mirror mode)."""
    ttl: float
    """The upstream's `ttl`, seconds: content not pulled for the longer of it and `gc.delay` is collected."""


def cached_scopes(config: Config) -> tuple[CachedScope, ...]:
    """The proxied repositories of the configuration; none without a `proxy` section."""
    proxy = config.proxy
    if proxy is None:
        return ()
    if proxy.remoteurl is not None:
        return (CachedScope("", proxy.ttl),)
    return tuple(CachedScope(upstream.prefix, upstream.ttl) for upstream in proxy.upstreams)
