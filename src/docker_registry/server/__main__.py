"""`python -m docker_registry.server`: the same command line as the `docker-registry` console script."""

from .cli import run

if __name__ == "__main__":
    run()
