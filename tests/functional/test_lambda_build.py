"""lambdas/build.py builds both Lambda artefacts for Linux x86_64 / CPython 3.12 and keeps them under
Lambda's unzipped limit; over the limit it fails loudly.

Building downloads manylinux wheels from the package index (pip's cache makes re-runs quick): the
test is ``slow`` and skips, saying so, when the index cannot be reached.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

pytestmark = pytest.mark.slow

LAMBDAS = Path(__file__).resolve().parents[2] / "lambdas"
#: Lambda quotas: 250 MB (262,144,000 bytes) unzipped, function and all layers together
#: (https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html).
LIMIT = 262_144_000
#: AWS SDK for pandas 3.16.1 layer, unzipped (aws/aws-sdk-pandas issue #3331): 204 MiB.
PANDAS_LAYER = 204 * 1024 * 1024


def _load_build() -> ModuleType:
    spec = importlib.util.spec_from_file_location("lambdas_build", LAMBDAS / "build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _index_reachable() -> bool:
    try:
        socket.create_connection(("pypi.org", 443), timeout=5).close()
        return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, dict[str, Any]]]]:
    if not _index_reachable():
        pytest.skip("pypi.org is not reachable: the build downloads manylinux wheels")
    out = tmp_path_factory.mktemp("lambda-build")
    run = subprocess.run([sys.executable, str(LAMBDAS / "build.py"), "--out", str(out), "--json"],
                         capture_output=True, text=True, timeout=600, check=False)
    assert run.returncode == 0, run.stderr
    yield out, {a["name"]: a for a in json.loads(run.stdout)}


def _file_bytes(root: Path) -> int:
    total = 0
    for folder, _, files in os.walk(root):
        total += sum(os.path.getsize(os.path.join(folder, f)) for f in files)
    return total


def test_the_reconcile_function_fits_beside_the_pandas_layer(built: tuple[Path, dict[str, dict[str, Any]]]) -> None:
    out, artefacts = built
    reconcile = artefacts["reconcile"]
    root = out / "reconcile"
    # The sizes reported are the bytes on disk, and with the pandas layer under the limit
    assert reconcile["unzipped_bytes"] == _file_bytes(root)
    assert reconcile["layer_bytes"] == PANDAS_LAYER
    assert reconcile["total_bytes"] == reconcile["unzipped_bytes"] + PANDAS_LAYER <= LIMIT
    assert reconcile["limit_bytes"] == LIMIT and reconcile["headroom_bytes"] == LIMIT - reconcile["total_bytes"]
    # What is in it: the handler, the policies, costguard, its core dependencies for CPython 3.12 on Linux
    assert (root / "reconcile_handler.py").read_bytes() == (LAMBDAS / "reconcile_handler.py").read_bytes()
    assert sorted(p.name for p in (root / "policies").iterdir()) == sorted(
        p.name for p in (LAMBDAS.parent / "policies").iterdir())
    assert (root / "costguard" / "reconcile" / "reconciler.py").is_file() and (root / "boto3").is_dir() and (root / "yaml").is_dir()
    assert list((root / "pydantic_core").glob("_pydantic_core.cpython-312-x86_64-linux-gnu.so"))
    # ... and not: the layer's libraries, the CLI's, bytecode
    for absent in ("pandas", "pyarrow", "numpy", "typer", "rich", "__pycache__"):
        assert not list(root.rglob(absent)), absent
    # The zip holds exactly the directory
    with zipfile.ZipFile(reconcile["zip_file"]) as archive:
        assert sum(i.file_size for i in archive.infolist()) == reconcile["unzipped_bytes"]
        assert "reconcile_handler.py" in archive.namelist()


def test_the_core_layer_has_the_python_layout_and_no_pandas(built: tuple[Path, dict[str, dict[str, Any]]]) -> None:
    out, artefacts = built
    layer = artefacts["core-layer"]
    root = out / "core-layer"
    assert [p.name for p in root.iterdir()] == ["python"]
    assert (root / "python" / "costguard" / "action_guard.py").is_file()
    assert (root / "python" / "costguard" / "pricing" / "data" / "bedrock_prices.json").is_file()
    for absent in ("pandas", "pyarrow", "numpy", "typer", "rich"):
        assert not (root / "python" / absent).exists(), absent
    assert layer["unzipped_bytes"] == _file_bytes(root) and layer["layer_bytes"] == 0
    assert layer["total_bytes"] <= LIMIT
    with zipfile.ZipFile(layer["zip_file"]) as archive:
        assert "python/costguard/action_guard.py" in archive.namelist()


def test_an_artefact_over_the_limit_fails_the_build(capsys: pytest.CaptureFixture[str]) -> None:
    build = _load_build()
    # Function and layers count together: 60 MB of function beside the 204 MiB layer is over
    over = build.Artefact("reconcile", "d", "z", 60_000_000, 1, PANDAS_LAYER)
    under = build.Artefact("core-layer", "d", "z", 30_000_000, 1, 0)
    assert build.check([over, under]) == [
        f"reconcile: 60,000,000 bytes + {PANDAS_LAYER:,} bytes of layers = {60_000_000 + PANDAS_LAYER:,} bytes "
        "unzipped, over Lambda's 262,144,000"]
    assert build.check([build.Artefact("x", "d", "z", LIMIT - PANDAS_LAYER, 1, PANDAS_LAYER)]) == []


def test_main_exits_1_and_says_why_when_over(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    build = _load_build()
    # A bigger pandas layer than the one budgeted: the same function no longer fits
    monkeypatch.setattr(build, "costguard_wheel", lambda into: into / "costguard.whl")
    monkeypatch.setattr(build, "build_reconcile", lambda out, wheel, policies, layer: build.Artefact(
        "reconcile", str(out), str(out / "r.zip"), 40_000_000, 1, layer))
    assert build.main(["--only", "reconcile", "--out", str(tmp_path), "--pandas-layer-mib", "215"]) == 1
    assert "error: reconcile: 40,000,000 bytes + 225,443,840 bytes of layers" in capsys.readouterr().err
    assert build.main(["--only", "reconcile", "--out", str(tmp_path), "--pandas-layer-mib", "200"]) == 0


def test_bad_arguments_exit_2(tmp_path: Path) -> None:
    build = _load_build()
    assert build.main(["--policies", str(tmp_path / "missing"), "--out", str(tmp_path)]) == 2
    assert build.main(["--pandas-layer-mib", "-1", "--out", str(tmp_path)]) == 2


def test_the_core_requirements_leave_out_the_cli_and_the_reports_extra() -> None:
    build = _load_build()
    names = [build._name(r) for r in build.core_requirements()]  # noqa: SLF001
    assert names == ["boto3", "pydantic", "pyyaml"]
