"""The repository explains itself: code, tests and docs cite only files inside it."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# Design notes and references kept outside the repository; the facts the code relies on are in
# docs/architecture.md.
OUTSIDE = re.compile(
    r"\b(DESIGN|eci-api|eci-wire-protocol|operator-conventions|ha-and-scale|workload-binding|"
    r"local-control-plane|local-cluster-with-nodes|eci-virtual-node|tenancy|model-revisions)\.md\b"
    r"|\.\./shared/"
)
FOLDERS = ("operator", "tests", "benchmarks", "charts", "deploy", "docs", "examples")
SUFFIXES = {".py", ".md", ".sh", ".yaml", ".yml", ".tpl", ".txt", ".toml", ".json"}


def test_no_file_cites_a_document_outside_the_repository() -> None:
    files = [REPO / "README.md", REPO / "Makefile", REPO / "Dockerfile"]
    for folder in FOLDERS:
        files += [p for p in (REPO / folder).rglob("*") if p.suffix in SUFFIXES and p != Path(__file__)]
    cited = [
        f"{path.relative_to(REPO)}:{number}: {line.strip()}"
        for path in files
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
        if OUTSIDE.search(line)
    ]
    assert not cited, "\n".join(cited)
