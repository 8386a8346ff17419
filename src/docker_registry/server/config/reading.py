"""YAML as the configuration reads it, from the file and from `REGISTRY_*` variables: PyYAML's safe loader, but a
key given twice in one mapping is an error, and a number written with a leading zero stays the text it is.

PyYAML keeps the last of two equal keys without a word: a file with a second `http:` section (a TLS block pasted at
the end) silently lost the first one's `addr`, where Distribution refuses the file. And it reads `0027` as the
octal number 23 and `27` as the decimal 27, so `storage.umask: 27` (meant as the shell's `umask 27`) masked other
bits than `0027` did; kept as text, `0027` and `"0027"` mean the same wherever they are written.
"""

from __future__ import annotations

import re
from typing import Any

import yaml
from yaml.constructor import ConstructorError

_LEADING_ZERO = re.compile(r"[-+]?0[0-9_]+")


class Loader(yaml.SafeLoader):
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
                raise ConstructorError(
                    "while reading a mapping", node.start_mark, f"found the key {key!r} twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node: yaml.ScalarNode) -> Any:
        if _LEADING_ZERO.fullmatch(str(node.value)):
            return str(node.value)  # "0027": octal to YAML 1.1, decimal to YAML 1.2; the key's type reads the text
        return super().construct_yaml_int(node)


Loader.add_constructor("tag:yaml.org,2002:int", Loader.construct_yaml_int)


def parse(text: str) -> Any:
    """`text` as YAML; yaml.YAMLError when it is not (a duplicate key included)."""
    return yaml.load(text, Loader=Loader)  # a SafeLoader
