"""The layering contract (pyproject.toml, [tool.importlinter]) catches what it must.

``make lint`` runs import-linter on the real package; these tests show it
failing on a copy of the package with one deliberate violation each: an
import pointing up the layers, and an import cycle inside a package.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint(package_root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own tool, fixed arguments
        [str(LINT_IMPORTS), str(ROOT / "pyproject.toml"), "--no-cache"],
        cwd=package_root,
        env={"PYTHONPATH": str(package_root), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.fixture(scope="module")
def package_copy(tmp_path_factory):
    """A copy of the package to break (sources only)."""

    def copy(name: str) -> Path:
        root: Path = tmp_path_factory.mktemp(name)
        shutil.copytree(ROOT / "cakra", root / "cakra", ignore=shutil.ignore_patterns("__pycache__", "*.mo"))
        return root

    return copy


def _append(path: Path, line: str) -> None:
    path.write_text(path.read_text() + f"\n{line}\n")


def test_the_package_keeps_its_layers_and_has_no_cycles(package_copy):
    result = _lint(package_copy("clean"))

    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


def test_an_import_pointing_up_is_caught(package_copy):
    root = package_copy("upward")
    # Enforcement sits below delivery: it must not know about deliveries.
    _append(root / "cakra" / "enforcement" / "numbers.py", "import cakra.delivery.models  # noqa")

    result = _lint(root)

    assert result.returncode == 1
    assert "cakra.enforcement is not allowed to import cakra.delivery" in result.stdout
    assert "cakra.enforcement.numbers -> cakra.delivery.models" in result.stdout


def test_a_cycle_inside_a_package_is_caught_even_from_inside_a_function(package_copy):
    root = package_copy("cycle")
    # The tasks import the dispatch module; dispatch importing the tasks back
    # (late, as code once did to dodge the cycle) closes it.
    _append(
        root / "cakra" / "delivery" / "dispatch.py",
        "def _late() -> None:\n    import cakra.delivery.tasks  # noqa",
    )

    result = _lint(root)

    assert result.returncode == 1
    assert "No cycles are allowed in cakra.delivery" in result.stdout
