"""YAML as the configuration reads it, from the file and from `REGISTRY_*` variables: PyYAML's safe loader, but a
key given twice in one mapping is told, and a number written with a leading zero stays the text it is.

PyYAML keeps the last of two equal keys without a word: a file with a second `http:` section (a TLS block pasted at
the end) silently lost the first one's `addr`. Distribution (yaml.v2's `Unmarshal`) keeps the last one too, and
its own sample configuration repeats `storage:` under `middleware:`, so such a file still loads, the last one
used, with a warning at start naming the line. And PyYAML reads `0027` as the octal number 23 and `27` as the
decimal 27, so `storage.umask: 27` (meant as the shell's `umask 27`) masked other bits than `0027` did; kept as
text, `0027` and `"0027"` mean the same wherever they are written.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

_LEADING_ZERO = re.compile(r"[-+]?0[0-9_]+")


class Loader(yaml.SafeLoader):
    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicates: list[str] = []
        """A warning for each key given twice in a mapping."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *defaults`: the keys beside it override its keys
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
            except TypeError:  # an unhashable key: the safe loader's own error follows
                break
            if duplicate:
                line = key_node.start_mark.line + 1
                self.duplicates.append(f"line {line}: the key {key!r} is given twice in one mapping; the last is used")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node: yaml.ScalarNode) -> Any:
        if _LEADING_ZERO.fullmatch(str(node.value)):
            return str(node.value)  # "0027": octal to YAML 1.1, decimal to YAML 1.2; the key's type reads the text
        return super().construct_yaml_int(node)


Loader.add_constructor("tag:yaml.org,2002:int", Loader.construct_yaml_int)


def parse(text: str, warnings: list[str] | None = None) -> Any:
    """`text` as YAML, with a warning added to `warnings` for each key given twice; yaml.YAMLError when it is no
    YAML."""
    loader = Loader(text)  # a SafeLoader
    try:
        data = loader.get_single_data()
    finally:
        loader.dispose()
    if warnings is not None:
        warnings += loader.duplicates
    return data
