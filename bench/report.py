"""The results table: each figure's median per server, the ratio ours/Distribution and whether the target is met,
printed as text and written as markdown.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Target:
    text: str
    met: Callable[[float, float, float], bool]
    """(ours, distribution, ratio) -> met?"""


def ratio_at_least(k: float) -> Target:
    return Target(f">= {k:g}x Distribution", lambda ours, dist, ratio: ratio >= k)


def ratio_at_most(k: float) -> Target:
    """For costs (CPU per request): ours at most k times Distribution's."""
    return Target(f"<= {k:g}x Distribution", lambda ours, dist, ratio: ratio <= k)


def speed_at_least(k: float) -> Target:
    """For wall times: at least k times Distribution's speed, i.e. ours takes at most 1/k of its time."""
    return Target(
        f">= {k:g}x Distribution's speed (time ratio <= {1 / k:.2f})", lambda ours, dist, ratio: ratio <= 1 / k
    )


def ours_at_least(v: float, unit: str) -> Target:
    return Target(f"ours >= {v:g} {unit}", lambda ours, dist, ratio: ours >= v)


def ours_below(v: float, unit: str) -> Target:
    return Target(f"ours < {v:g} {unit}", lambda ours, dist, ratio: ours < v)


@dataclass
class Figure:
    name: str
    unit: str
    samples: dict[str, list[float]] = field(default_factory=dict)
    target: Target | None = None
    higher_is_better: bool = True
    digits: int = 0

    def add(self, server: str, value: float) -> None:
        self.samples.setdefault(server, []).append(value)

    def median(self, server: str) -> float | None:
        values = self.samples.get(server)
        return statistics.median(values) if values else None

    def row(self, ours: str, dist: str) -> list[str]:
        a, b = self.median(ours), self.median(dist)
        ratio = a / b if a is not None and b else None
        met = "-"
        if self.target and a is not None and b is not None and ratio is not None:
            met = "yes" if self.target.met(a, b, ratio) else "**no**"
        elif self.target and a is not None and b is None:
            met = "yes" if self.target.met(a, 0.0, 0.0) else "**no**"
        return [
            f"{self.name} ({self.unit})",
            self._fmt(a),
            self._fmt(b),
            f"{ratio:.2f}" if ratio is not None else "-",
            self.target.text if self.target else ("higher is better" if self.higher_is_better else "lower is better"),
            met,
        ]

    def _fmt(self, v: float | None) -> str:
        return "-" if v is None else f"{v:,.{self.digits}f}"


HEADER = ["figure", "ours", "Distribution", "ratio ours/Distribution", "target", "met?"]


def markdown_table(rows: list[list[str]], header: list[str] = HEADER) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def text_table(rows: list[list[str]], header: list[str] = HEADER) -> str:
    table = [header, *[[c.replace("**", "") for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in table)
