"""Who pushed a v1 image (migration 0028), as the store checks it: only under auth (a `pusher` given). Without auth
nobody is told apart, even for images a user pushed while auth was on; two first json PUTs of one id racing on
PostgreSQL tell the loser whose the image is."""

from __future__ import annotations

import json

import sqlalchemy as sa

from docker_registry.server.store import migrate
from docker_registry.server.store.engine import create_engine
from docker_registry.server.store.metadata import MetadataStore
from docker_registry.server.store.tables import v1_images
from docker_registry.server.store.v1 import PutJson

IMAGE = "a" * 64


def _json(marker: str) -> bytes:
    return json.dumps({"id": IMAGE, "marker": marker}).encode()


def test_without_auth_an_image_a_user_began_is_anyones_to_push_again(database_url: str) -> None:
    engine = create_engine(database_url)
    migrate.upgrade(engine)
    store = MetadataStore(engine)
    try:
        assert store.put_v1_json(IMAGE, _json("alice's"), None, "alice") is PutJson.STORED
        assert store.put_v1_json(IMAGE, _json("bob's"), None, "bob") is PutJson.NOT_YOURS  # under auth
        assert store.put_v1_json(IMAGE, _json("again"), None, None) is PutJson.STORED  # auth turned off since
    finally:
        store.close()


def test_the_loser_of_two_first_json_puts_is_told_whose_the_image_is(database_url: str) -> None:
    """On PostgreSQL both PUTs read no row and both insert; the loser's insert does nothing, and it answered 200
    (review). Here the winner's row is written between the loser's read and its insert."""
    engine = create_engine(database_url)
    migrate.upgrade(engine)
    store = MetadataStore(engine)
    try:
        with engine.begin() as conn:
            conn.execute(
                v1_images.insert().values(
                    id=IMAGE,
                    json=_json("alice's"),
                    parent=None,
                    ancestry=json.dumps([IMAGE]),
                    complete=False,
                    created_at=0.0,
                    pusher="alice",
                )
            )
        with engine.begin() as conn:
            assert store._raced_json(conn, IMAGE, "bob") is PutJson.NOT_YOURS
            assert store._raced_json(conn, IMAGE, "alice") is PutJson.STORED
            conn.execute(sa.update(v1_images).values(complete=True))
            assert store._raced_json(conn, IMAGE, "bob") is PutJson.EXISTS
    finally:
        store.close()
