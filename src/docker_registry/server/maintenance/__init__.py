"""Maintenance commands over a registry's stores (issue 9): `fsck` checks every blob against its digest and every
manifest's references, and can set damaged blobs aside; `import` moves a CNCF Distribution storage tree into the
metadata store, in place or by copying. Run from the command line (`cli.py`), never by the server."""
