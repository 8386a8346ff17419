"""Puts the test suite's helper folder (`tests/`) on `sys.path`, so the benchmark takes its media types and
digests from the one copy the tests use. Imported for that effect, before those modules."""

import sys
from pathlib import Path

TESTS = str(Path(__file__).resolve().parent.parent / "tests")
if TESTS not in sys.path:
    sys.path.append(TESTS)
