"""What the command line needs to know of the maintenance commands to build its parser, kept apart from the
commands themselves so printing `--help` or a configuration imports no database or storage code."""

from __future__ import annotations

EXIT_OK = 0
EXIT_PROBLEMS = 1
"""Exit statuses: nothing wrong; problems remain (listed on stdout) or the database failed. A configuration or
usage error is the command line's status 2, before anything is opened or created."""
IMPORT_SOURCES = ("distribution",)
"""What `import --from` reads; another source is one more name here and one more reader module."""
DEFAULT_JOBS = 4
"""Blobs read at once: reads of one wait on the disk or network while another's bytes are hashed."""
