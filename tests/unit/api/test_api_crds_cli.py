"""`datacache-operator crds`: print, --output-dir and --check."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from datacache_operator.api.crds import all_crds
from datacache_operator.cli import main

FILE_NAME = "eci.datacache.dev_datacaches.yaml"


def test_prints_all_crds_as_multi_document_yaml(capsys: pytest.CaptureFixture[str]):
    assert main(["crds"]) == 0
    documents = list(yaml.safe_load_all(capsys.readouterr().out))
    assert documents == all_crds()


def test_output_dir_then_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    assert main(["crds", "--output-dir", str(tmp_path / "crds")]) == 0
    assert sorted(p.name for p in (tmp_path / "crds").iterdir()) == [
        "eci.datacache.dev_datacachereplications.yaml",
        FILE_NAME,
        "eci.datacache.dev_eciaccounts.yaml",
    ]
    assert main(["crds", "--check", str(tmp_path / "crds")]) == 0


def test_check_names_missing_stale_and_orphaned_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    assert main(["crds", "--check", str(tmp_path)]) == 1
    assert f"{tmp_path / FILE_NAME}: missing" in capsys.readouterr().err

    main(["crds", "--output-dir", str(tmp_path)])
    (tmp_path / FILE_NAME).write_text(
        (tmp_path / FILE_NAME).read_text().replace("default: 20", "default: 30")
    )
    (tmp_path / "eci.datacache.dev_gone.yaml").write_text("{}")
    assert main(["crds", "--check", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / FILE_NAME}: stale" in err
    assert "eci.datacache.dev_gone.yaml: not generated" in err
    assert "make crds" in err


def test_output_dir_and_check_are_exclusive(tmp_path: Path):
    with pytest.raises(SystemExit):
        main(["crds", "--output-dir", str(tmp_path), "--check", str(tmp_path)])
