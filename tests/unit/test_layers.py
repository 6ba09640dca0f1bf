"""The layering of docs/architecture.md, held by a test: data flows one way, and no kind reaches into
another kind's modules (shared code lives in `common`, `base` or `binding` modules).

A module may import from its own layer or from layers below it; peers of one rank (the
webhook and the controllers) do not import each other.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "operator" / "datacache_operator"

# Lower ranks are imported by higher ones, never the other way round.
RANKS = {
    "": 0,  # datacache_operator/__init__.py: GROUP, VERSION
    "api": 1,
    "metrics": 1,
    "fairqueue": 1,  # start-time fair queuing's turns: the rate limiter's and the scheduler's
    "kube": 1,  # the operator's own Kubernetes calls, the Kubernetes boundary
    "settings": 2,
    "cloud": 3,  # the one ECI boundary
    "leader": 3,  # leader election on a Lease
    "reconcile": 4,  # pure decisions (may read cloud.models, plain data)
    "admission": 5,
    "controllers": 5,
    "runtime": 6,  # the loop under kopf
    "main": 7,  # kopf's decorators: wiring only
    "cli": 7,  # imports each subcommand by name, at run time
    "__main__": 8,  # `python -m datacache_operator`: the command line
}
KINDS = ("datacache", "replication")
KIND_LAYERS = ("api", "reconcile", "controllers")


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        parts = parts[:-1] if parts[-1] == "__init__" else parts
        found[".".join(parts)] = path
    return found


def imports(path: Path) -> set[str]:
    """Our modules that `path` imports, relative to the package ("" for the package itself)."""
    names: set[str] = set()
    known = modules()
    for node in ast.walk(ast.parse(path.read_text())):
        targets: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("datacache_operator"):
            base = node.module.removeprefix("datacache_operator").lstrip(".")
            targets = [f"{base}.{a.name}".lstrip(".") for a in node.names]
            targets = [t if t in known else base for t in targets]
        elif isinstance(node, ast.Import):
            targets = [
                a.name.removeprefix("datacache_operator").lstrip(".")
                for a in node.names
                if a.name.startswith("datacache_operator")
            ]
        names.update(targets)
    return names


def layer(module: str) -> str:
    return module.split(".")[0] if module else ""


def test_every_module_has_a_layer():
    assert {layer(m) for m in modules()} <= set(RANKS), set(map(layer, modules())) - set(RANKS)


def test_no_module_imports_from_a_layer_above_it_or_from_a_peer():
    wrong = []
    for module, path in modules().items():
        own = layer(module)
        for imported in imports(path):
            other = layer(imported)
            if other == own:
                continue
            if RANKS[other] > RANKS[own] or (RANKS[other] == RANKS[own] and own != ""):
                wrong.append(f"{module} imports {imported} ({other}, rank {RANKS[other]} >= {RANKS[own]})")
    assert not wrong, "\n".join(wrong)


def test_no_kind_imports_another_kind():
    wrong = []
    for module, path in modules().items():
        parts = module.split(".")
        if len(parts) != 2 or parts[0] not in KIND_LAYERS or parts[1] not in KINDS:
            continue
        others = [k for k in KINDS if k != parts[1]]
        for imported in imports(path):
            if imported.split(".")[-1] in others:
                wrong.append(f"{module} imports {imported}")
    assert not wrong, "\n".join(wrong)


def test_the_emulator_stands_alone():
    """Users run it in their own CI without the operator: it imports nothing of the operator."""
    emulator = PACKAGE.parents[1] / "emulator" / "eci_datacache_emulator"
    assert emulator.is_dir()
    wrong = [
        f"{path.name} imports {imported}" for path in emulator.rglob("*.py") for imported in imports(path)
    ]
    assert not wrong, "\n".join(wrong)


def test_the_check_sees_a_violation(tmp_path: Path):
    """The import reader finds what a layer test must catch (so the tests above can fail)."""
    bad = tmp_path / "bad.py"
    bad.write_text(
        "from datacache_operator.controllers.datacache import DataCacheController\nimport datacache_operator.main\n"
    )
    assert imports(bad) == {"controllers.datacache", "main"}


def test_kind_names_are_spelled_only_in_the_api_layer():
    """Each kind's plural is a constant of `api/`; the generic layers never spell one out."""
    plurals = {"datacaches", "datacachereplications"}
    wrong = [
        f"{module}:{node.lineno} spells {node.value!r}"
        for module, path in modules().items()
        if layer(module) != "api"
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Constant) and node.value in plurals
    ]
    assert not wrong, "\n".join(wrong)
