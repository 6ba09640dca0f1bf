"""The Go modules that build one control plane per Kubernetes release (tests/controlplane/k8s-1.*)
agree with themselves, and build.sh resolves KUBE_VERSION to them."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

CONTROLPLANE = Path(__file__).resolve().parents[1] / "controlplane"
BUILD = CONTROLPLANE / "build.sh"
MODULES = sorted(CONTROLPLANE.glob("k8s-1.*/go.mod"), key=lambda p: int(p.parent.name.rsplit(".", 1)[1]))
TOOLS = {
    "go.etcd.io/etcd/server/v3",
    "k8s.io/kubernetes/cmd/kube-apiserver",
    "k8s.io/kubernetes/cmd/kube-controller-manager",
    "k8s.io/kubernetes/cmd/kubectl",
}


def required(go_mod: str, path: str) -> str:
    match = re.search(rf"^\s*{re.escape(path)} (v\S+)", go_mod, re.MULTILINE)
    assert match, f"{path} is not required"
    return match.group(1)


def test_at_least_two_releases_are_pinned():
    assert len(MODULES) >= 2, "make test runs the newest and the oldest pinned release"


@pytest.mark.parametrize("go_mod", MODULES, ids=[p.parent.name for p in MODULES])
def test_a_module_pins_one_release_everywhere(go_mod: Path):
    text = go_mod.read_text()
    minor = go_mod.parent.name.removeprefix("k8s-1.")
    kube = required(text, "k8s.io/kubernetes")
    assert re.fullmatch(rf"v1\.{minor}\.\d+", kube), f"{go_mod.parent.name} pins {kube}"
    staging = "v0" + kube.removeprefix("v1")
    replaces = re.findall(r"^replace (k8s\.io/\S+) => (k8s\.io/\S+) (\S+)$", text, re.MULTILINE)
    assert len(replaces) >= 29, "every staging module of k8s.io/kubernetes is replaced"
    assert {(source, target) for source, target, _ in replaces if source != target} == set()
    assert {version for _, _, version in replaces} == {staging}
    assert TOOLS <= set(re.findall(r"^\t(\S+)$", text.split("tool (", 1)[1].split(")", 1)[0], re.MULTILINE))
    assert required(text, "go.etcd.io/etcd/server/v3").startswith("v3.")
    assert (go_mod.parent / "go.sum").stat().st_size > 0


def test_versions_lists_the_pinned_releases_oldest_first():
    listed = subprocess.run(["bash", str(BUILD), "--versions"], capture_output=True, text=True, check=True)
    assert listed.stdout.split() == [required(p.read_text(), "k8s.io/kubernetes") for p in MODULES]


def resolve(tmp_path: Path, kube_version: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("KUBE_VERSION", "KUBEBUILDER_ASSETS")}
    env["DATACACHE_CONTROLPLANE_CACHE"] = str(tmp_path)
    if kube_version is not None:
        env["KUBE_VERSION"] = kube_version
    return subprocess.run(["bash", str(BUILD), "--resolve"], capture_output=True, text=True, env=env)


@pytest.mark.skipif(shutil.which("go") is None, reason="build.sh needs Go")
def test_kube_version_resolves_to_the_pinned_module(tmp_path: Path):
    newest, oldest = MODULES[-1], MODULES[0]
    assert resolve(tmp_path, None).stdout.split()[2] == str(newest.parent)
    kube = required(oldest.read_text(), "k8s.io/kubernetes")
    etcd = required(oldest.read_text(), "go.etcd.io/etcd/server/v3")
    minor = kube.rsplit(".", 1)[0]
    for asked in (kube, minor, minor.removeprefix("v")):
        version, etcd_version, module, key = resolve(tmp_path, asked).stdout.split()
        assert (version, etcd_version, module) == (kube, etcd, str(oldest.parent))
        assert key.startswith(f"k8s-{kube}_etcd-{etcd}_helm-")


@pytest.mark.skipif(shutil.which("go") is None, reason="build.sh needs Go")
def test_an_unpinned_minor_needs_a_patch_and_nonsense_is_refused(tmp_path: Path):
    unpinned = resolve(tmp_path, "v1.20")
    assert unpinned.returncode == 2 and "give a full version (v1.20.PATCH)" in unpinned.stderr
    nonsense = resolve(tmp_path, "latest")
    assert nonsense.returncode == 2 and "want v1.MINOR or v1.MINOR.PATCH" in nonsense.stderr


def test_the_chart_refuses_what_is_older_than_the_oldest_pinned_minor():
    chart = yaml.safe_load(
        (CONTROLPLANE.parents[1] / "charts" / "eci-datacache-operator" / "Chart.yaml").read_text()
    )
    oldest = required(MODULES[0].read_text(), "k8s.io/kubernetes").rsplit(".", 1)[0]
    assert chart["kubeVersion"] == f">={oldest.removeprefix('v')}.0-0"


@pytest.mark.skipif(shutil.which("go") is None, reason="build.sh needs Go")
def test_a_folder_holding_the_asked_binaries_is_reused_without_a_build(tmp_path: Path):
    kube = required(MODULES[0].read_text(), "k8s.io/kubernetes")
    key = resolve(tmp_path, kube).stdout.split()[3]
    folder = tmp_path / key
    folder.mkdir()
    for name in ("etcd", "kubectl", "kube-apiserver"):
        (folder / name).write_text("#!/bin/sh\n")
        (folder / name).chmod(0o755)
    # A `go` that only answers `go env`: anything but a reuse fails instead of building.
    goos, goarch = subprocess.run(
        ["go", "env", "GOOS", "GOARCH"], capture_output=True, text=True
    ).stdout.split()
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "go").write_text(
        f'#!/bin/sh\n[ "$1" = env ] && [ "$2" = GOOS ] && echo {goos} && exit 0\n'
        f'[ "$1" = env ] && [ "$2" = GOARCH ] && echo {goarch} && exit 0\nexit 99\n'
    )
    (fake / "go").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "KUBEBUILDER_ASSETS"}
    env.update(
        DATACACHE_CONTROLPLANE_CACHE=str(tmp_path),
        KUBE_VERSION=kube,
        CONTROLPLANE_BINARIES="etcd kubectl kube-apiserver",
        PATH=f"{fake}{os.pathsep}{os.environ['PATH']}",
    )
    reused = subprocess.run(["bash", str(BUILD)], capture_output=True, text=True, env=env)
    assert (reused.returncode, reused.stdout.strip()) == (0, str(folder)), reused.stderr
    assert not (folder / ".complete").exists()
    del env["CONTROLPLANE_BINARIES"]  # all five wanted: not reusable, and the fake go cannot build
    assert subprocess.run(["bash", str(BUILD)], capture_output=True, text=True, env=env).returncode != 0
