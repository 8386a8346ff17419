"""The `notifications` section: Distribution's endpoints and event options, plus how long undelivered events are
kept (ours: Distribution keeps its queue in memory, we keep it in the database)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, PlainValidator, model_validator

from .section import OURS, Secret, Section
from .values import (
    HTTPURL,
    Bool,
    Duration,
    Headers,
    PositiveInt,
    Text,
    hide_header_values,
    hide_url_secrets,
    invalid,
    problem,
)

ACTIONS = ("push", "pull", "mount", "delete")


class IgnoreSection(Section):
    mediatypes: list[Text] = Field(default_factory=list, description="target media types not sent to this endpoint")
    actions: list[Text] = Field(
        default_factory=list, description="actions (`push`, `pull`, `mount`, `delete`) not sent to this endpoint"
    )

    @model_validator(mode="after")
    def _known(self) -> IgnoreSection:
        for action in self.actions:
            if action not in ACTIONS:
                raise problem(f"unknown action {action!r}: push, pull, mount or delete")
        return self


class EndpointSection(Section):
    name: Text = Field(description="names the endpoint in logs and keeps its place in the event stream")
    disabled: Bool = Field(False, description="keep the endpoint configured but send it nothing")
    url: Annotated[HTTPURL, Secret(hide_url_secrets)] = Field(description="where events are POSTed")
    headers: Annotated[Headers, Secret(hide_header_values)] = Field(
        default_factory=dict, description="map of header name to a list of values, sent with every request"
    )
    timeout: Duration = Field(1.0, description="how long one delivery may take before it counts as failed")
    threshold: PositiveInt = Field(
        10, description="failures in a row after which each retry waits `backoff` (before: a short pause)"
    )
    backoff: Duration = Field(1.0, description="the wait between retries once `threshold` failures happened in a row")
    ignoredmediatypes: list[Text] = Field(
        default_factory=list, description="target media types not sent to this endpoint"
    )
    ignore: IgnoreSection = Field(default_factory=IgnoreSection)
    batch: Annotated[PositiveInt, OURS] = Field(
        1,
        description="most events sent in one envelope: Distribution sends one; a receiver that reads every element "
        "of `events` can take more, and keeps up with far more pulls",
    )

    @property
    def filters(self) -> bool:
        """True when some events are not for this endpoint."""
        return bool(self.ignore.actions or self.ignore.mediatypes or self.ignoredmediatypes)

    def ignores(self, action: str, media_type: str | None) -> bool:
        """True when this endpoint is not sent events of `action` on a target of `media_type`."""
        if action in self.ignore.actions:
            return True
        return media_type is not None and (media_type in self.ignoredmediatypes or media_type in self.ignore.mediatypes)


class EventsSection(Section):
    includereferences: Bool = Field(
        False, description="manifest events list the manifest's references (layers, config, children)"
    )
    maxage: Annotated[Duration, OURS] = Field(
        7 * 24 * 3600.0,
        description="an event not delivered to an endpoint this long after it happened is dropped for that endpoint, "
        "with a log line",
    )


MAX_NICE = 19
"""The lowest CPU priority Linux gives (`nice` 19)."""


def _nice(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_NICE:
        raise invalid(f"an integer from 0 to {MAX_NICE}", value)
    return value


class DeliverySection(Section):
    nice: Annotated[int, PlainValidator(_nice), OURS] = Field(
        10,
        description="how much lower the CPU priority of the process delivering events is than the workers' "
        "(`os.nice`); under a burst that takes every core, events wait in the database and go out once requests "
        "leave CPU free; 0 gives it the workers' priority (with `http.workers: 1` delivery runs in the one process)",
    )


class NotificationsConfig(Section):
    endpoints: list[EndpointSection] = Field(
        default_factory=list,
        description="webhooks receiving events `{name, url, headers, timeout, threshold, backoff, ignoredmediatypes, "
        "ignore: {mediatypes, actions}, disabled, batch}` (see docs/notifications.md)",
    )
    events: EventsSection = Field(default_factory=EventsSection)
    delivery: DeliverySection = Field(default_factory=DeliverySection)

    @model_validator(mode="after")
    def _unique(self) -> NotificationsConfig:
        names = [endpoint.name for endpoint in self.endpoints]
        for name in names:
            if names.count(name) > 1:
                raise problem(f"endpoint names must differ: {name!r} is used twice")
        return self

    @property
    def enabled(self) -> list[EndpointSection]:
        """The endpoints to deliver to; none means no event is recorded at all."""
        return [endpoint for endpoint in self.endpoints if not endpoint.disabled]
