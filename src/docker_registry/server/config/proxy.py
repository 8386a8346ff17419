"""The `proxy` section: the pull-through cache (Distribution's mirror keys, and our several upstreams)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, PlainValidator, model_validator

from .section import OURS, Secret, Section
from .values import Directory, Duration, Text, http_url, invalid, problem


def _remote_url(value: Any) -> str:
    parts = http_url(value, "an http:// or https:// URL such as https://registry-1.docker.io")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise problem("remoteurl takes no query, fragment or credentials (use username and password)")
    return parts.geturl().rstrip("/")


def _prefix(value: Any) -> str:
    if not isinstance(value, str) or not value or value.startswith("/") or value.endswith("/") or "//" in value:
        raise invalid("a repository name prefix such as hub or ghcr/team", value)
    return value


RemoteURL = Annotated[str, PlainValidator(_remote_url)]
Prefix = Annotated[str, PlainValidator(_prefix)]


class UpstreamSection(Section):
    prefix: Annotated[Prefix, OURS] = Field(
        description="local names `<prefix>/<name>` are served from the upstream's `<name>` (`hub/library/alpine`)"
    )
    remoteurl: Annotated[RemoteURL, OURS] = Field(description="the upstream registry's URL")
    username: Annotated[Text | None, OURS] = Field(None, description="the upstream account (Basic or token flow)")
    password: Annotated[Text | None, OURS, Secret()] = Field(None, description="its password or access token")
    ttl: Annotated[Duration, OURS] = Field(
        0.0,
        description="how long a tag is served before it is checked upstream again (0: on every pull); garbage "
        "collection drops content not pulled for this or `gc.delay`, whichever is longer",
    )


class ProxyConfig(Section):
    remoteurl: RemoteURL | None = Field(
        None,
        description="mirror mode: the whole registry mirrors this upstream (as `dockerd --registry-mirror` expects) "
        "and refuses pushes",
    )
    username: Text | None = Field(None, description="the upstream account of mirror mode")
    password: Annotated[Text | None, Secret()] = Field(None, description="its password or access token")
    ttl: Duration = Field(
        0.0,
        description="mirror mode: how long a tag is served before it is checked upstream again with a HEAD "
        "(0: on every pull; content by digest is never checked again); garbage collection drops content not pulled "
        "for this or `gc.delay`, whichever is longer",
    )
    upstreams: Annotated[list[UpstreamSection], OURS] = Field(
        default_factory=list,
        description="several upstreams beside local repositories: `{prefix, remoteurl, username, password, ttl}`; "
        "pushes under a prefix are refused, other names are ordinary local repositories",
    )

    spooldirectory: Annotated[Directory | None, OURS] = Field(
        None,
        description="a local directory for blobs being fetched when the storage has no local disk (S3): clients "
        "stream them from here while they are uploaded, and the node's workers lock their fetches here (default: "
        "a temporary directory made at start, removed at exit)",
    )

    @model_validator(mode="after")
    def _one_mode(self) -> ProxyConfig:
        if self.remoteurl is not None and self.upstreams:
            raise problem("give remoteurl (mirror mode) or upstreams, not both")
        if self.remoteurl is None and not self.upstreams:
            raise problem("give remoteurl (mirror mode) or upstreams")
        if (self.username is None) != (self.password is None):
            raise problem("username and password go together")
        prefixes = [u.prefix for u in self.upstreams]
        for number, prefix in enumerate(prefixes):
            for other in prefixes[:number]:
                if prefix == other or prefix.startswith(other + "/") or other.startswith(prefix + "/"):
                    raise problem(f"upstreams[{number}].prefix: {prefix!r} overlaps {other!r}")
        for number, upstream in enumerate(self.upstreams):
            if (upstream.username is None) != (upstream.password is None):
                raise problem(f"upstreams[{number}]: username and password go together")
        return self
