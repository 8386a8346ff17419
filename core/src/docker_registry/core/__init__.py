"""docker-registry-core: what every part of docker-registry 3 and every storage driver shares.

Nothing here depends on anything outside the standard library, so a driver package can depend on this
distribution alone.
"""

__version__ = "3.0.0.dev0"
