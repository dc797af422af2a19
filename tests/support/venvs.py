"""Fresh virtualenvs with costguard installed as a user would (``pip install costguard[...]``), and
what they weigh. Used by tests/functional/test_core_install.py and bench/install_size.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

#: Run by the virtualenv's own interpreter: bytes per installed distribution, and which
#: distributions boto3 brings (its requirement closure), so "beyond boto3" can be told apart.
_MEASURE = r"""
import importlib.metadata as md, json, re
def norm(name): return re.sub(r"[-_.]+", "-", name).lower()
dists = {norm(d.metadata["Name"]): d for d in md.distributions()}
sizes = {}
for name, dist in dists.items():
    total = 0
    for f in dist.files or ():
        path = dist.locate_file(f)
        if path.is_file() and "__pycache__" not in path.parts:
            total += path.stat().st_size
    sizes[name] = total
closure, todo = set(), ["boto3"]
while todo:
    name = norm(todo.pop())
    if name in closure or name not in dists:
        continue
    closure.add(name)
    for req in dists[name].requires or ():
        if "extra ==" not in req:
            todo.append(re.split(r"[ ;<>=!~\[(]", req, maxsplit=1)[0])
print(json.dumps({"sizes": sizes, "boto3": sorted(closure)}))
"""


def _run(command: list[str]) -> str:
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:6])} ... failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout


def build_wheel(into: Path) -> Path:
    """costguard as a wheel, built from the working tree."""
    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check", "--no-deps",
          "--wheel-dir", str(into), str(REPO)])
    (wheel,) = into.glob("costguard-*.whl")
    return wheel


def make_venv(directory: Path, wheel: Path, extras: str = "") -> Path:
    """A virtualenv (no pip in it) with ``costguard[extras]`` from ``wheel``; returns its python."""
    _run([sys.executable, "-m", "venv", "--without-pip", str(directory)])
    python = directory / "bin" / "python"
    requirement = f"costguard{f'[{extras}]' if extras else ''} @ {wheel.as_uri()}"
    # The test environment's pip installs into the new interpreter (pip >= 22.3: --python).
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--disable-pip-version-check",
          requirement])
    return python


def installed_bytes(python: Path) -> dict[str, object]:
    """``{"sizes": {distribution: bytes}, "boto3": [boto3 and what it requires]}`` (no ``__pycache__``)."""
    return json.loads(_run([str(python), "-c", _MEASURE]))


def summary(python: Path) -> dict[str, int]:
    measured = installed_bytes(python)
    sizes: dict[str, int] = measured["sizes"]  # type: ignore[assignment]
    boto3_stack = set(measured["boto3"])  # type: ignore[arg-type]
    total = sum(sizes.values())
    boto3_bytes = sum(size for name, size in sizes.items() if name in boto3_stack)
    return {"total_bytes": total, "boto3_bytes": boto3_bytes, "beyond_boto3_bytes": total - boto3_bytes,
            **{f"{name}_bytes": sizes[name] for name in ("pandas", "pyarrow", "numpy") if name in sizes}}
