"""What a section of the schema is, the markers its keys carry, and how the other modules read them back.

Loading, the environment overrides, `config` output and the docs' key table all walk the same declared models;
the markers say what a plain type cannot: a key we accept but ignore (`Unsupported`), one we refuse (`Refused`),
a secret to mask (`Secret`), a key of ours that Distribution lacks (`OURS`), a default worth words (`Shown`).
"""

from __future__ import annotations

import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, GetCoreSchemaHandler, model_validator
from pydantic.fields import FieldInfo
from pydantic_core import CoreSchema, core_schema

from .values import invalid, problem

Marker = TypeVar("Marker")


@dataclass(frozen=True)
class Unsupported:
    """A key of Distribution's that we accept and ignore: present, it becomes a notice `<key>: <reason>`. Its value,
    whatever it is, is dropped, so it neither shows in `config` output nor makes two configurations differ."""

    reason: str = "not supported yet; ignored"

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        def drop(value: Any) -> None:
            return None

        return core_schema.no_info_plain_validator_function(drop)


@dataclass(frozen=True)
class Refused:
    """A key whose value we cannot honour, and ignoring it would weaken what the operator asked for: any value is
    an error naming the key. Declared with `validate_default=False`, since its absence is fine."""

    reason: str

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        def refuse(value: Any) -> Any:
            raise problem(self.reason)

        return core_schema.no_info_plain_validator_function(refuse)


def _stars(value: str) -> str:
    return "***"


@dataclass(frozen=True)
class Secret:
    """Masked in `config` output unless `--show-secrets`; `mask` keeps what is safe to show (a URL's host)."""

    mask: Callable[[str], str] = _stars


@dataclass(frozen=True)
class Ours:
    """A key this registry adds to Distribution's set; the docs' table says so."""


OURS = Ours()


@dataclass(frozen=True)
class Shown:
    """How the docs' table shows a default that is computed when the server starts (None in the schema)."""

    text: str


class Section(BaseModel):
    """A mapping of the configuration file: unknown keys are errors, values are checked as YAML typed them."""

    model_config = ConfigDict(extra="forbid", strict=True, validate_default=True)

    EXTRA_KEYS: ClassVar[tuple[str, str] | None] = None
    """For a section that takes keys it does not declare: (placeholder, meaning) for the docs' table."""

    @model_validator(mode="before")
    @classmethod
    def _mapping(cls, data: Any) -> Any:
        """An empty section (`log:` alone) is YAML's None; anything but a mapping with text keys is refused."""
        if isinstance(data, cls):
            return data
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise invalid("a mapping", data)
        for key in data:
            if not isinstance(key, str):
                raise invalid("text keys", key)
        # Every section is validated where it sits, defaults too, so a bad default (./data being a file) is named
        # by its whole key, and what the file leaves out goes through the same checks as what it says.
        missing = {key: None for _, key, field in declared(cls) if key not in data and _is_section(field)}
        return cls.prepare({**data, **missing})

    @classmethod
    def prepare(cls, data: dict[str, Any]) -> dict[str, Any]:
        """Hook for a section whose keys depend on each other before validation (storage's one driver)."""
        return data


class DriverSection(Section):
    """A storage driver's own options: the driver checks them itself, so any key is taken, as the YAML typed it."""

    model_config = ConfigDict(extra="allow")


# --- reading the schema back ---------------------------------------------------------------------------------------


def marker(field: FieldInfo, kind: type[Marker]) -> Marker | None:
    return next((item for item in field.metadata if isinstance(item, kind)), None)


def is_ignored(field: FieldInfo) -> bool:
    """Accepted for compatibility but never in effect: not shown by `config` nor in the docs' table."""
    return marker(field, Unsupported) is not None or marker(field, Refused) is not None


def bare(annotation: Any) -> Any:
    """The type under `Annotated[...]` and `... | None`."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            kinds = [arg for arg in get_args(annotation) if arg is not type(None)]
            if len(kinds) != 1:
                return annotation
            annotation = kinds[0]
        else:
            return annotation


def section_type(annotation: Any) -> type[Section] | None:
    kind = bare(annotation)
    return kind if isinstance(kind, type) and issubclass(kind, Section) else None


def takes_extra_keys(section: type[Section]) -> bool:
    return section.model_config.get("extra") == "allow"


def declared(section: type[Section]) -> Iterator[tuple[str, str, FieldInfo]]:
    """(attribute, key as the file writes it, field) in declaration order."""
    for name, field in section.model_fields.items():
        yield name, field.alias or name, field


def _is_section(field: FieldInfo) -> bool:
    """A section always there (storage.filesystem, optional, is made by storage's `prepare` when chosen)."""
    return field.default_factory is not None and section_type(field.annotation) is not None


def notices(section: Section, prefix: str = "") -> Iterator[str]:
    """A notice for every `Unsupported` key the file or environment set, nested sections included."""
    for name, key, field in declared(type(section)):
        unsupported = marker(field, Unsupported)
        if unsupported is not None and name in section.model_fields_set:
            yield f"{prefix}{key}: {unsupported.reason}"
        value = getattr(section, name)
        if isinstance(value, Section):
            yield from notices(value, f"{prefix}{key}.")
