"""The benchmark's results: one row per metric, direct beside through the gateway, as markdown."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Row", "table"]


@dataclass
class Row:
    scenario: str
    metric: str
    direct: float | None
    gateway: float | None
    compare: str = "added"  # "added" (gateway - direct), "ratio" (gateway / direct) or ""
    digits: int = 2

    def cells(self) -> list[str]:
        def fmt(value: float | None) -> str:
            return "—" if value is None else f"{value:,.{self.digits}f}"

        delta = ""
        if self.direct is not None and self.gateway is not None:
            if self.compare == "added":
                delta = f"{self.gateway - self.direct:+,.{self.digits}f}"
            elif self.compare == "ratio" and self.direct:
                delta = f"×{self.gateway / self.direct:.2f}"
        return [self.scenario, self.metric, fmt(self.direct), fmt(self.gateway), delta]


def table(rows: list[Row]) -> str:
    lines = ["| scenario | metric | direct (fake) | through gateway | added / ratio |", "|---|---|--:|--:|--:|"]
    return "\n".join(lines + ["| " + " | ".join(row.cells()) + " |" for row in rows])
