"""Build the Lambda artefacts for the Lambda platform (Linux x86_64, Python 3.12) and check their size.

    python lambdas/build.py                 # both artefacts into lambdas/build/
    python lambdas/build.py --only reconcile --policies ./my-policies

Artefacts (each a directory SAM deploys, plus its zip):

``build/reconcile/``
    The reconcile function (``template.yaml``, ``CodeUri: build/reconcile/``): the handler, the
    policies, costguard and its core dependencies. pandas, pyarrow and numpy are NOT in it: they
    come from the AWS-maintained AWS SDK for pandas layer (template parameter ``PandasLayerArn``).
``build/core-layer/``
    A costguard core layer (``python/`` layout) for action group Lambdas that use
    ``costguard.action_guard`` or the meter (``action-group-example.yaml``).

The typer/rich CLI is left out of both (no Lambda runs the CLI), and no ``__pycache__`` is written.

**Size limit.** Lambda's quota: "250 MB" for "the maximum size of the contents of a deployment
package, including layers and custom runtimes (unzipped)", i.e. 262,144,000 bytes (the error reads
"Unzipped size must be smaller than 262144000 bytes"), and the function and ALL its layers count
together (https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html, checked
2026-12-01). The pandas layer cannot be measured here (downloading it needs AWS credentials), so
its published size is budgeted: 204 MiB unzipped for AWS SDK for pandas 3.16.1, up from 167 MiB
for 3.16.0 (https://github.com/aws/aws-sdk-pandas/issues/3331, 2026-05-11, measured with ``du``);
pass ``--pandas-layer-mib`` for the version you deploy. The build fails (exit 1) when an artefact
plus its layers is over the limit.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

#: Lambda's unzipped limit for a function plus all its layers, in bytes (see the module docstring).
LAMBDA_UNZIPPED_LIMIT = 262_144_000
MIB = 1024 * 1024
#: Unzipped size of the AWS SDK for pandas layer 3.16.1 (aws/aws-sdk-pandas issue #3331).
PANDAS_LAYER_MIB = 204

PLATFORM = "manylinux2014_x86_64"
PYTHON_VERSION = "3.12"
#: Dependencies only the command line needs; no Lambda runs it.
CLI_ONLY = frozenset({"typer", "rich"})


class BuildError(Exception):
    """An artefact could not be built, or is over the size limit."""


@dataclass(frozen=True, slots=True)
class Artefact:
    name: str
    directory: str
    zip_file: str
    unzipped_bytes: int
    zipped_bytes: int
    #: What the layers it is deployed with add (the pandas layer for the reconcile function).
    layer_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.unzipped_bytes + self.layer_bytes

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "total_bytes": self.total_bytes, "limit_bytes": LAMBDA_UNZIPPED_LIMIT,
                "headroom_bytes": LAMBDA_UNZIPPED_LIMIT - self.total_bytes}


def core_requirements(pyproject: Path = REPO / "pyproject.toml") -> list[str]:
    """costguard's core dependencies (pyproject ``[project] dependencies``) without the CLI-only ones."""
    dependencies: list[str] = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["dependencies"]
    return [d for d in dependencies if _name(d) not in CLI_ONLY]


def _name(requirement: str) -> str:
    for stop in "<>=!~[; ":
        requirement = requirement.split(stop, 1)[0]
    return requirement.strip().lower()


def _run(command: list[str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BuildError(f"{' '.join(command[:4])} ... failed:\n{done.stdout[-2000:]}{done.stderr[-4000:]}")


def _pip(*args: str) -> list[str]:
    return [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", *args]


def costguard_wheel(into: Path) -> Path:
    """costguard itself as a wheel (pure Python, so it installs for any platform)."""
    _run(_pip("wheel", "--no-deps", "--quiet", "--wheel-dir", str(into), str(REPO)))
    (wheel,) = into.glob("costguard-*.whl")
    return wheel


def install_for_lambda(target: Path, wheel: Path) -> None:
    """costguard (without the CLI's dependencies) and its core dependencies, as Lambda's Linux runs them."""
    platform = ["--platform", PLATFORM, "--python-version", PYTHON_VERSION, "--implementation", "cp",
                "--only-binary=:all:", "--no-compile", "--quiet", "--target", str(target)]
    _run(_pip("install", *platform, "--no-deps", str(wheel)))
    _run(_pip("install", *platform, *core_requirements()))
    # Metadata and console scripts of what is not installed would only mislead.
    shutil.rmtree(target / "bin", ignore_errors=True)


def directory_bytes(root: Path) -> int:
    """Unzipped size as Lambda counts it: the bytes of every file."""
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def _zip(root: Path, zip_path: Path) -> int:
    zip_path.unlink(missing_ok=True)
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for path in sorted(root.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(root).as_posix())
    return zip_path.stat().st_size


def _fresh(directory: Path) -> Path:
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    return directory


def build_reconcile(out: Path, wheel: Path, policies: Path, pandas_layer_bytes: int) -> Artefact:
    target = _fresh(out / "reconcile")
    install_for_lambda(target, wheel)
    leaked = sorted(n for n in ("pandas", "pyarrow", "numpy") if (target / n).exists())
    if leaked:  # the layer provides them; two copies would not fit
        raise BuildError(f"reconcile package contains {', '.join(leaked)}: they must come from the pandas layer")
    shutil.copy2(HERE / "reconcile_handler.py", target / "reconcile_handler.py")
    shutil.copytree(policies, target / "policies")
    zipped = _zip(target, out / "reconcile.zip")
    return Artefact("reconcile", str(target), str(out / "reconcile.zip"), directory_bytes(target), zipped,
                    pandas_layer_bytes)


def build_core_layer(out: Path, wheel: Path) -> Artefact:
    root = _fresh(out / "core-layer")
    install_for_lambda(root / "python", wheel)  # Lambda puts a layer's python/ on sys.path
    zipped = _zip(root, out / "core-layer.zip")
    return Artefact("core-layer", str(root), str(out / "core-layer.zip"), directory_bytes(root), zipped, 0)


def check(artefacts: list[Artefact]) -> list[str]:
    """One problem per artefact over the limit (function plus layers)."""
    return [
        f"{a.name}: {a.unzipped_bytes:,} bytes + {a.layer_bytes:,} bytes of layers = {a.total_bytes:,} bytes "
        f"unzipped, over Lambda's {LAMBDA_UNZIPPED_LIMIT:,}"
        for a in artefacts
        if a.total_bytes > LAMBDA_UNZIPPED_LIMIT
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=HERE / "build", help="output directory (default lambdas/build)")
    parser.add_argument("--policies", type=Path, default=REPO / "policies", help="policy directory bundled with the reconcile function")
    parser.add_argument("--only", choices=("reconcile", "core-layer"), help="build just one artefact")
    parser.add_argument("--pandas-layer-mib", type=float, default=PANDAS_LAYER_MIB,
                        help=f"unzipped size of the AWS SDK for pandas layer you deploy (default {PANDAS_LAYER_MIB}, version 3.16.1)")
    parser.add_argument("--json", action="store_true", help="print the sizes as JSON")
    args = parser.parse_args(argv)
    if not args.policies.is_dir():
        print(f"error: --policies {args.policies} is not a directory", file=sys.stderr)
        return 2
    if args.pandas_layer_mib < 0:
        print("error: --pandas-layer-mib must not be negative", file=sys.stderr)
        return 2
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    # No .pyc files: the Lambda file system is read-only, and they only add size.
    os.environ["PYTHONDONTWRITEBYTECODE"] = "1"
    try:
        with tempfile.TemporaryDirectory(prefix="costguard-wheel-") as tmp:
            wheel = costguard_wheel(Path(tmp))
            artefacts: list[Artefact] = []
            if args.only in (None, "reconcile"):
                artefacts.append(build_reconcile(out, wheel, args.policies, int(args.pandas_layer_mib * MIB)))
            if args.only in (None, "core-layer"):
                artefacts.append(build_core_layer(out, wheel))
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    problems = check(artefacts)
    if args.json:
        print(json.dumps([a.to_dict() for a in artefacts], indent=2))
    else:
        for a in artefacts:
            print(f"{a.name}: {a.unzipped_bytes / MIB:.1f} MiB unzipped ({a.zipped_bytes / MIB:.1f} MiB zipped)"
                  f" + {a.layer_bytes / MIB:.1f} MiB of layers = {a.total_bytes / MIB:.1f} MiB"
                  f" of {LAMBDA_UNZIPPED_LIMIT / MIB:.1f} MiB -> {a.directory}")
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
