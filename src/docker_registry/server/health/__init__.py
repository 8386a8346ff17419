"""Health (issue 13): checks that run in the background at their interval (`monitor`), what they probe (`probes`:
storage writable, free space above `storage.minfree`, database answering at the current schema), and the endpoints
that report them from memory (`endpoints`: `/healthz`, `/readyz` on the main port, `/debug/health`)."""
