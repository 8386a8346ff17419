"""A mount's look-up of the source repository's link visits that one link, whatever plan PostgreSQL runs it with:
psycopg prepares a statement after a few runs, and the generic plan PostgreSQL may then pick, made without the
values, once walked every repository that links the digest (a popular base layer: every mount of it dearer than
the last)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from sqlalchemy.dialects import postgresql

from docker_registry.core.digest import Digest
from docker_registry.server.store import migrate
from docker_registry.server.store.blobs import _MOUNTABLE
from docker_registry.server.store.engine import create_engine
from docker_registry.server.store.metadata import MetadataStore

LINKS = 300


def _nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    return [plan, *(node for child in plan.get("Plans", []) for node in _nodes(child))]


@pytest.mark.parametrize("analyzed", [False, True], ids=["fresh", "analyzed"])
def test_a_mount_look_up_visits_one_link_under_a_generic_plan(postgres_cluster: Any, analyzed: bool) -> None:
    engine = create_engine(postgres_cluster.new_database())
    migrate.upgrade(engine)
    store = MetadataStore(engine)
    try:
        content = json.dumps({"layer": "popular"}).encode()
        digest = Digest("sha256", hashlib.sha256(content).hexdigest())
        for i in range(LINKS):
            store.link_blob(f"linked/{i}", digest, len(content))
        assert store.mount_blob("source/new", digest, "linked/7")
        sql = str(_MOUNTABLE.for_dialect("postgresql").compile(dialect=postgresql.dialect()))
        sql = sql.replace("%(source)s", "$1").replace("%(digest)s", "$2")
        with engine.begin() as conn:
            if analyzed:
                conn.exec_driver_sql("ANALYZE")
            conn.exec_driver_sql("SET LOCAL plan_cache_mode = force_generic_plan")
            conn.exec_driver_sql(f"PREPARE mountable(text, text) AS {sql}")
            # a utility statement binds no parameters: the values are ours, written in as literals
            row = conn.exec_driver_sql(
                f"EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE mountable('linked/{LINKS - 1}', '{digest}')"
            ).scalar_one()
            conn.exec_driver_sql("DEALLOCATE mountable")
        nodes = _nodes(row[0]["Plan"])
        links = [node for node in nodes if node.get("Relation Name") == "repository_blobs"]
        assert links
        for node in links:  # the one link, not every link of the digest
            visited = node.get("Actual Rows", 0) + node.get("Rows Removed by Filter", 0)
            assert visited * node["Actual Loops"] <= 1, json.dumps(node, indent=1)
        for node in nodes:  # the source's name looked up once, not once per link (a small table may be scanned)
            if node.get("Relation Name") == "repositories":
                assert node["Actual Loops"] == 1, json.dumps(node, indent=1)
    finally:
        engine.dispose()
