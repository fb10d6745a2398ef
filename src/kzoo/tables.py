"""Plain-text tables for the terminal (the CLI's listings, a search's ranking, evaluations)."""

from __future__ import annotations


def print_table(rows: list[list[str]], header: list[str]):
    """Prints `rows` under `header` in left-aligned columns."""
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths))
    print(line.rstrip())
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())
