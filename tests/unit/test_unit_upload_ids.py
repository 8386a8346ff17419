"""Upload ids as requests name them, and claim tokens: an id in the form `start` makes is taken as it is, any
other spelling of a UUID is normalised to it, anything else is an unknown session; tokens fit the writer column."""

from __future__ import annotations

import uuid

import pytest

from docker_registry.server.registry import uploads
from docker_registry.server.registry.errors import RegistryError
from docker_registry.server.store.tables import uploads as uploads_table


def test_an_id_as_made_is_taken_as_it_is_and_other_spellings_are_normalised() -> None:
    made = str(uuid.uuid4())
    assert uploads._check_id(made) == made
    for spelling in (made.upper(), made.replace("-", ""), "{" + made + "}", "urn:uuid:" + made):
        assert uploads._check_id(spelling) == made


@pytest.mark.parametrize("wrong", ["", "x", "not-a-uuid-at-all-but-36-characters", "0" * 35, "g" * 32])
def test_anything_else_is_an_unknown_session(wrong: str) -> None:
    with pytest.raises(RegistryError) as raised:
        uploads._check_id(wrong)
    assert raised.value.error.code == "BLOB_UPLOAD_UNKNOWN"


def test_claim_tokens_are_distinct_and_fit_the_writer_column() -> None:
    tokens = {uploads._new_token() for _ in range(1000)}
    assert len(tokens) == 1000
    width = uploads_table.c.writer.type.length
    assert all(len(token) <= width for token in tokens)
