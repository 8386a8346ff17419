"""The benchmark's own tests import its modules as `run.py` does: from this folder."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
