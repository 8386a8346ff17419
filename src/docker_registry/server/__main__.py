"""`python -m docker_registry.server`: the same command line as the `docker-registry` console script."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
