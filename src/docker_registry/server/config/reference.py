"""The key table of docs/configuration.md, generated from the schema so the docs cannot drift from the code.

`python -m docker_registry.server.config.reference docs/configuration.md` rewrites the table between its two
marker comments and leaves the prose around it alone; a unit test fails while the file differs from the schema.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from .schema import Config
from .section import Ours, Section, Shown, declared, is_ignored, marker, section_type

BEGIN = "<!-- keys: generated from the schema by `python -m docker_registry.server.config.reference`; do not edit -->"
END = "<!-- end of the generated keys -->"


@dataclass(frozen=True)
class Row:
    key: str
    default: str
    meaning: str


def rows(section: type[Section] = Config, prefix: str = "") -> Iterator[Row]:
    """One row per key in effect, in declaration order; a section with nothing under it (storage.inmemory) is one."""
    for name, key, field in declared(section):
        if is_ignored(field):
            continue
        inner = section_type(field.annotation)
        if inner is not None and _has_keys(inner):
            yield from rows(inner, f"{prefix}{key}.")
            continue
        ours = " (ours)" if marker(field, Ours) else ""
        yield Row(f"`{prefix}{key}`{ours}", _default(section, name, field), field.description or "")
    if section.EXTRA_KEYS is not None:
        placeholder, meaning = section.EXTRA_KEYS
        yield Row(f"`{prefix}{placeholder}`", "", meaning)


def _has_keys(section: type[Section]) -> bool:
    return section.EXTRA_KEYS is not None or any(not is_ignored(field) for _, _, field in declared(section))


def _default(section: type[Section], name: str, field: FieldInfo) -> str:
    shown = marker(field, Shown)
    if shown is not None:
        return shown.text
    if field.default is PydanticUndefined or field.default is None or field.default == {}:
        return ""
    # As the file writes it: the key's own serializer turns the duration 30.0 into "30s". The section is built from
    # its defaults unchecked, so a default such as ./data is shown as declared, not resolved.
    value = section.model_construct().model_dump(include={name})[name]
    return f"`{str(value).lower() if isinstance(value, bool) else value}`"


def table() -> str:
    lines = ["| key | default | meaning |", "|---|---|---|"]
    lines += [f"| {row.key} | {row.default} | {_cell(row.meaning)} |" for row in rows()]
    return "\n".join(lines)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def with_table(document: str) -> str:
    """`document` with the text between the markers replaced by the table the schema gives."""
    head, begin, rest = document.partition(BEGIN)
    _, end, tail = rest.partition(END)
    if not begin or not end:
        raise ValueError(f"the document lacks the markers {BEGIN!r} ... {END!r}")
    return f"{head}{BEGIN}\n\n{table()}\n\n{END}{tail}"


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m docker_registry.server.config.reference docs/configuration.md", file=sys.stderr)
        return 2
    path = Path(argv[0])
    document = path.read_text(encoding="utf-8")
    updated = with_table(document)
    if updated != document:
        path.write_text(updated, encoding="utf-8")
    print(f"{path}: {'rewritten' if updated != document else 'up to date'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
