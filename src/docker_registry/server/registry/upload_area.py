"""Where an upload session keeps its bytes in storage, told by its id alone.

On a driver whose `move` renames (the file driver), sessions begun by this version are named by a version-8 UUID
(RFC 9562's vendor-specific form: 122 random bits, as many as a version-4 one) and keep their bytes in one object,
`uploads/<id>`: that saves a directory made and pruned per blob (a `mkdir` and an `rmdir`; on ext4 without a
journal each new inode scans for recently freed ones, and on a disk that had seen hours of uploads `mkdir` was a
tenth of a skopeo push's server CPU).
Sessions begun before (version-4 ids, and the pull-through cache's version-5 ones) keep theirs in
`uploads/<id>/data`, and still do: a session in flight across an upgrade is continued, finished or purged where its
bytes are. So do new sessions on an object store (`moves_by_copy`), where a folder is only a key prefix and costs
nothing, and whose driver keeps a chunked upload's state under the session's object name.

Either way `uploads/<id>` is the one name that removing a session's data removes (an object, or a folder with
its object in it), and the one entry a listing of `uploads/` shows for it. The layout is decided from the id, not
by looking at storage, so it costs no storage call and holds on every driver (an object store can hold both
`uploads/<id>` and `uploads/<id>/data`)."""

from __future__ import annotations

import os
import re
import uuid

_FLAT_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
"""A version-8 UUID in canonical form: the id of a session whose bytes are the object `uploads/<id>`."""


def new_upload_id(flat: bool) -> str:
    """A new session's id: with `flat`, a version-8 UUID of 122 random bits (its bytes go to `uploads/<id>`), else
    a version-4 one (`uploads/<id>/data`)."""
    if not flat:
        return str(uuid.uuid4())
    h = os.urandom(16).hex()
    variant = "89ab"[int(h[16], 16) & 3]
    return f"{h[:8]}-{h[8:12]}-8{h[13:16]}-{variant}{h[17:20]}-{h[20:]}"


def upload_path(upload_id: str) -> str:
    """The object holding a session's bytes, for an id in canonical form."""
    if _FLAT_ID.fullmatch(upload_id):
        return f"uploads/{upload_id}"
    return f"uploads/{upload_id}/data"


def upload_area(upload_id: str) -> str:
    """What removing a session's data removes, in either layout: its object, or its folder."""
    return f"uploads/{upload_id}"
