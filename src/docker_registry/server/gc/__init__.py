"""Garbage collection, online and as a command: what nothing references any more is deleted after a grace period,
while the registry serves (see `docs/gc.md`).

collector (one collection: mark, check again, delete), summary (what it scanned and freed), progress (a bar on a
terminal, log lines otherwise), background (the periodic collection and upload purging inside the server, one
process at a time), command (`docker-registry garbage-collect`), cached (which repositories the pull-through cache
serves and for how long their content lives after its last pull).
"""
