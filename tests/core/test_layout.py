"""The distribution's shape: namespace portions, no shadowing of the standard library, the CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from tokensmith.cli import SUBCOMMANDS, cli

REPO = Path(__file__).resolve().parents[2]
COMPONENTS = ("planner", "operator", "trainer", "evaluator")


def test_stdlib_operator_not_shadowed_from_repo_root() -> None:
    out = subprocess.run(
        [sys.executable, "-c", "import operator, collections; print(operator.itemgetter)"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "built-in function itemgetter" in out.stdout or "itemgetter" in out.stdout
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize("component", COMPONENTS)
def test_namespace_portions(component: str) -> None:
    assert not (REPO / component / "tokensmith" / "__init__.py").exists(), (
        "PEP 420: no tokensmith/__init__.py"
    )
    assert (REPO / component / "tokensmith" / component / "__init__.py").exists()
    out = subprocess.run(
        [sys.executable, "-c", f"import tokensmith.{component} as m; print(m.__file__)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert str(REPO / component) in out.stdout


def test_help_lists_every_subcommand_without_heavy_imports() -> None:
    code = (
        "import sys; from tokensmith.cli import main\n"
        "try: main(['--help'])\nexcept SystemExit: pass\n"
        "heavy = [m for m in ('torch', 'pandas', 'kopf', 'deepspeed', 'lm_eval', 'kubernetes', 'numpy') "
        "if m in sys.modules]\n"
        "print('HEAVY', heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    for name in ("plan", "curate", "train", "eval", "run", "operator", "crd"):
        assert name in out
    assert "HEAVY []" in out


def test_every_subcommand_resolves() -> None:
    runner = CliRunner()
    for name in SUBCOMMANDS:
        result = runner.invoke(cli, [name, "--help"])
        assert result.exit_code == 0, (name, result.output)


def test_unknown_subcommand_is_a_usage_error() -> None:
    result = CliRunner().invoke(cli, ["frobnicate"])
    assert result.exit_code == 2
    assert "No such command" in result.output


def test_pyproject_lists_every_package() -> None:
    """setuptools' find cannot span several roots, so packages are listed by hand; keep the list whole."""
    import tomllib

    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {"tokensmith"}
    for component in COMPONENTS:
        root = REPO / component
        for init in root.glob("tokensmith/**/__init__.py"):
            on_disk.add(".".join(init.parent.relative_to(root).parts))
    assert on_disk == listed, (
        f"add to / remove from pyproject.toml [tool.setuptools] packages: {on_disk ^ listed}"
    )
