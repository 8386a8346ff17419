"""Puts the test suite's helper folder (`tests/`) on `sys.path`, so the benchmark takes its media types and
digests from the one copy the tests use. Imported for that effect, before those modules."""

import sys
from pathlib import Path

TESTS = str(Path(__file__).resolve().parent.parent / "tests")
for folder in (TESTS, str(Path(TESTS) / "e2e")):  # e2e: the OCI layouts bench/s3.py pushes with skopeo
    if folder not in sys.path:
        sys.path.append(folder)
