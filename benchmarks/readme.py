"""A benchmark's table in benchmarks/README.md, between its own markers (added at the end
the first time, replaced in place after that)."""

from __future__ import annotations

from pathlib import Path

README_FILE = Path(__file__).parent / "README.md"


def put_table(marker: str, heading: str, table: str, readme: Path = README_FILE) -> None:
    """Write `table` between `<!-- {marker}:begin -->` and `<!-- {marker}:end -->`; the first
    time, under a new `## {heading}` at the end."""
    begin, end = f"<!-- {marker}:begin -->", f"<!-- {marker}:end -->"
    text = readme.read_text()
    block = f"{begin}\n{table}\n{end}"
    if begin in text:
        text = text[: text.index(begin)] + block + text[text.index(end) + len(end) :]
    else:
        text += f"\n## {heading}\n\n{block}\n"
    readme.write_text(text)
