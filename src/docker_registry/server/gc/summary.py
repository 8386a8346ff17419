"""What a collection did: the summary the command prints and the background collector logs."""

from __future__ import annotations

from dataclasses import dataclass, field

KINDS = ("manifests", "links", "blobs", "v1_images", "uploads", "temporary", "repositories")
"""What a collection deletes: untagged manifests, repositories' blob links, blobs (row and file), the v1 images
deleted manifests were presented as, upload sessions with their data, the storage driver's temporary files, and
repositories left with nothing in them."""


@dataclass(slots=True)
class Summary:
    dry_run: bool
    scanned: dict[str, int] = field(default_factory=dict)
    """Rows looked at, by kind (manifests, links, blobs, uploads, repositories)."""
    deleted: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    """What was deleted, by kind (with `dry_run`: what would be)."""
    bytes_freed: int = 0
    seconds: float = 0.0

    def as_json(self) -> dict[str, object]:
        return {
            "dry_run": self.dry_run,
            "scanned": self.scanned,
            "deleted": self.deleted,
            "bytes_freed": self.bytes_freed,
            "seconds": round(self.seconds, 3),
        }

    def text(self) -> str:
        verb = "would delete" if self.dry_run else "deleted"
        scanned = ", ".join(f"{count} {kind}" for kind, count in self.scanned.items())
        deleted = ", ".join(f"{count} {kind}" for kind, count in self.deleted.items())
        freed = "would free" if self.dry_run else "freed"
        return (
            f"scanned: {scanned}\n"
            f"{verb}: {deleted}\n"
            f"{freed}: {_size(self.bytes_freed)} ({self.bytes_freed} bytes)\n"
            f"time: {self.seconds:.2f} s"
        )


def _size(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{count} B"
        value /= 1024
    return f"{count} B"
