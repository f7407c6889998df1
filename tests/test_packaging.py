"""Packaging: the wheel carries the whole package and works outside the repository; environment.yml, the README's
commands and .ci/run agree with pyproject.toml and with each other."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent

PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
SETUP = (
    "python3 -m venv .venv && . .venv/bin/activate && pip install -c constraints.txt torch==2.13.0"
    ' && pip install -c constraints.txt -e ".[dev]"'
)
CONDA_NAMES = {"pytorch": "torch"}  # conda-forge name -> PyPI name, where they differ


def _name_and_spec(requirement: str) -> tuple[str, str]:
    """``"torch>=2.5,<2.14"`` -> ``("torch", ">=2.5,<2.14")``, names normalised as PEP 503 does."""
    match = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$", requirement)
    name, spec = match.group(1), match.group(2).replace(" ", "")
    return re.sub(r"[-_.]+", "-", name).lower(), spec


def _readme_command(marker: str) -> str:
    readme = (REPO_ROOT / "README.md").read_text()
    block = re.search(rf"<!-- {marker}:start -->\n```bash\n(.*?)\n```\n<!-- {marker}:end -->", readme, re.DOTALL)
    assert block, f"README.md has no ```bash block between the {marker} markers"
    return block.group(1)


# ---------------------------------------------------------------- environment.yml


def test_environment_yml_mirrors_pyproject():
    env = yaml.safe_load((REPO_ROOT / "environment.yml").read_text())
    assert env["channels"] == ["conda-forge"]
    conda, pip = {}, []
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            pip += dep["pip"]
            continue
        name, spec = _name_and_spec(dep)
        conda[CONDA_NAMES.get(name, name)] = spec
    assert conda.pop("python") == PYPROJECT["project"]["requires-python"]
    assert conda.pop("pip") == ""
    wanted = dict(_name_and_spec(r) for r in PYPROJECT["project"]["dependencies"])
    assert conda == wanted, f"environment.yml's conda dependencies drift from pyproject.toml: {conda} != {wanted}"
    assert pip == ['-e ".[dev]"'], "environment.yml must pip-install the project with its dev extra"


def test_pyproject_extras_hold_what_the_tests_and_book_need():
    extras = {k: {_name_and_spec(r)[0] for r in v} for k, v in PYPROJECT["project"]["optional-dependencies"].items()}
    assert {"jupyterlab", "jupytext", "nbval", "ipykernel"} <= extras["book"]
    assert {"pytest", "pytest-xdist", "ruff", "pyyaml", "setuptools"} <= extras["dev"]
    assert "bralib" in extras["dev"] and "bralib" in extras["book"]  # dev includes book, book includes data
    assert {"onnx", "onnxruntime", "onnxscript", "safetensors"} <= extras["export"]
    dev = PYPROJECT["project"]["optional-dependencies"]["dev"]
    assert "bralib[book,export,site]" in dev and "triton" in extras["dev"]  # CI tests export and the kernel too
    core = {_name_and_spec(r)[0] for r in PYPROJECT["project"]["dependencies"]}
    assert core == {"torch", "numpy", "sympy", "matplotlib", "tqdm"}  # nothing else in the core
    assert (
        _name_and_spec(next(r for r in PYPROJECT["project"]["dependencies"] if r.startswith("torch")))[1]
        == ">=2.5,<2.14"
    )


# ---------------------------------------------------------------- pinned versions (constraints.txt)


def _pins() -> dict[str, str]:
    pins = {}
    for line in (REPO_ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^\s;=<>!~]+)", line)
        assert match, f"constraints.txt: {line!r} is not an exact pin NAME==VERSION"
        name = _name_and_spec(match.group(1))[0]
        assert name not in pins, f"constraints.txt pins {name} twice"
        pins[name] = match.group(2)
    return pins


def _requirements() -> list[str]:
    project = PYPROJECT["project"]
    return [*project["dependencies"], *(r for extra in project["optional-dependencies"].values() for r in extra)]


def test_constraints_pin_every_requirement_within_pyproject_ranges():
    from packaging.requirements import Requirement

    pins = _pins()
    assert "bralib" not in pins and "pip" not in pins
    for text in _requirements():
        requirement = Requirement(text)
        name = _name_and_spec(requirement.name)[0]
        if name == "bralib" or (requirement.marker and not requirement.marker.evaluate()):
            continue
        assert name in pins, f"constraints.txt has no pin for {name} (run .ci/refresh-pins)"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"constraints.txt pins {name}=={pins[name]}, outside pyproject.toml's {requirement.specifier}"
        )
    assert pins["torch"] == "2.13.0"  # the README's torch, without a +cpu/+cu local label


def test_the_refresh_script_writes_the_file_the_readme_installs_from():
    script = REPO_ROOT / ".ci" / "refresh-pins"
    assert os.access(script, os.X_OK)
    assert (
        "> constraints.txt.new" in script.read_text() and "mv constraints.txt.new constraints.txt" in script.read_text()
    )
    header = (REPO_ROOT / "constraints.txt").read_text().splitlines()[:3]
    assert any("Written by .ci/refresh-pins on" in line for line in header), header


# ---------------------------------------------------------------- README commands and .ci/run


def test_readme_commands_set_up_from_nothing_with_torch_first():
    course, tests = _readme_command("course-command"), _readme_command("test-command")
    for command in (course, tests):
        assert command.startswith(SETUP + " && "), command
        assert "\n" not in command
    assert course == SETUP + " && bralib book build && " + (
        "jupyter lab --allow-root --ServerApp.root_dir=. chapters/00_how_to_use.ipynb"
    )
    assert tests == SETUP + " && ruff check . && bralib book build && " + (
        "OMP_NUM_THREADS=1 pytest --nbval-lax --nbval-current-env -n 2 --dist loadscope -rs --durations=15"
    )


def _fake_repo(tmp_path: Path, test_command: str) -> Path:
    """A folder with .ci/run and a README whose test command is ``test_command``."""
    (tmp_path / ".ci").mkdir()
    shutil.copy2(REPO_ROOT / ".ci" / "run", tmp_path / ".ci" / "run")
    (tmp_path / "README.md").write_text(
        f"# x\n\n<!-- test-command:start -->\n```bash\n{test_command}\n```\n<!-- test-command:end -->\n"
    )
    return tmp_path / ".ci" / "run"


def _ci(script: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "CI": "true", "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(
        ["bash", str(script)], env=env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL
    )


def test_ci_run_is_executable_and_has_a_place_for_system_packages():
    script = REPO_ROOT / ".ci" / "run"
    assert os.access(script, os.X_OK)
    text = script.read_text()
    assert "<!-- test-command:start -->" in text and "# >>> Install system packages" in text


def test_ci_run_runs_the_readme_command_step_by_step_with_timings(tmp_path):
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "test_one.py").write_text("def test_one():\n    assert True\n")
    pytest_step = "python -m pytest -q -p no:cacheprovider --rootdir t t"
    done = _ci(_fake_repo(tmp_path, f'export GREETING=hi && echo "said $GREETING" && {pytest_step}'))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "said hi" in done.stdout  # steps share one shell, as `. .venv/bin/activate` needs
    assert re.search(r"\d+s  rc=0 +echo \"said \$GREETING\"", done.stdout), done.stdout
    assert "all steps passed" in done.stdout
    assert done.stdout.rstrip().splitlines()[-1] == "pytest: 1 passed, 0 failed, 0 skipped"  # the closing line


def test_ci_run_stops_at_a_failing_step(tmp_path):
    done = _ci(_fake_repo(tmp_path, "true && false && echo never"))
    assert done.returncode == 1
    assert "FAILED: step exited with code 1: false" in done.stdout and "never" not in done.stdout.replace(
        "echo never", ""
    )


def test_ci_run_prints_the_counts_line_when_pytest_fails(tmp_path):
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "test_two.py").write_text("def test_ok():\n    pass\n\ndef test_bad():\n    assert False\n")
    done = _ci(_fake_repo(tmp_path, "python -m pytest -q -p no:cacheprovider --rootdir t t"))
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout.rstrip().splitlines()[-1] == "pytest: 1 passed, 1 failed, 0 skipped", done.stdout


def test_ci_run_fails_when_pytest_collects_no_tests(tmp_path):
    (tmp_path / "empty").mkdir()
    done = _ci(_fake_repo(tmp_path, "python -m pytest -q -p no:cacheprovider --rootdir empty empty"))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "pytest collected no tests (exit code 5)" in done.stdout


# ---------------------------------------------------------------- the wheel


def _package_files(root: Path) -> set[str]:
    return {
        p.relative_to(root).as_posix()
        for p in (root / "bralib").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }


def test_the_wheel_carries_the_package_and_works_outside_the_repository(tmp_path):
    """Build the wheel from a copy of the sources, install it beside this environment's torch, use it from elsewhere."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO_ROOT / name, source / name)
    shutil.copytree(REPO_ROOT / "bralib", source / "bralib", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    build = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "-q",
        "-w",
        str(tmp_path / "dist"),
    ]
    subprocess.run([*build, str(source)], check=True, capture_output=True, text=True, timeout=300)
    (wheel,) = (tmp_path / "dist").glob("bralib-*.whl")
    in_wheel = {n for n in zipfile.ZipFile(wheel).namelist() if n.startswith("bralib/")}
    missing = _package_files(source) - in_wheel
    assert not missing, f"the wheel lacks package files (add data files to package-data): {sorted(missing)}"

    # A second environment that sees this one's packages (torch, pip) through a .pth file, but not the editable bralib:
    # .pth files inside a folder named by another .pth are not processed, so the editable finder stays out.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(purelib, "base_env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [python, "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)], check=True, timeout=300
    )

    outside = tmp_path / "elsewhere"  # no book.toml, no bralib/ folder: only the installed package
    outside.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"OMP_NUM_THREADS": "1"}
    script = f"""
import pathlib, bralib, bralib.cli, bralib.book, bralib.exercises
assert pathlib.Path(bralib.__file__).is_relative_to({str(venv)!r}), bralib.__file__
assert {{"book", "exercise"}} <= set(bralib.cli.COMMANDS)
print("exercise checks:", bralib.exercises.names())
if {(REPO_ROOT / "bralib" / "ops").is_dir()!r}:  # once bralib.ops exists, the wheel must run it
    import torch
    from bralib.ops import bra
    q = torch.randn(1, 8, 8, 4, generator=torch.Generator().manual_seed(0))
    out = bra(q, q, q, num_heads=1, n_win=2, topk=2)
    assert out.shape == (1, 8, 8, 4) and torch.isfinite(out).all()
    print("bra ok", tuple(out.shape))
"""
    done = subprocess.run([python, "-c", script], cwd=outside, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "tokens_to_attend" in done.stdout

    cli = subprocess.run(
        [venv / "bin" / "bralib", "--help"], cwd=outside, env=env, capture_output=True, text=True, timeout=120
    )
    assert cli.returncode == 0 and "book" in cli.stdout, cli.stdout + cli.stderr
    listing = subprocess.run(
        [venv / "bin" / "bralib", "book", "list"], cwd=outside, env=env, capture_output=True, text=True
    )
    assert listing.returncode == 2 and "no book.toml" in listing.stderr and "Traceback" not in listing.stderr


@pytest.mark.parametrize("name", ["book", "exercise"])
def test_subcommand_modules_are_light_at_import(name, run_python):
    """`bralib --help` imports every sub-command module: ours must not pull torch, jupytext or pytest."""
    from bralib.cli import COMMANDS

    module = COMMANDS[name][0]
    done = run_python(
        "-c",
        f"import sys, {module}; print(sorted(m for m in ('torch', 'jupytext', 'pytest', 'numpy') if m in sys.modules))",
        cwd=REPO_ROOT,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_version_flag_and_python_dash_m(run_python):
    import bralib

    for args in (["-m", "bralib", "--version"], ["-m", "bralib.cli", "--version"]):
        done = run_python(*args, cwd=REPO_ROOT)
        assert done.returncode == 0 and done.stdout.strip() == f"bralib {bralib.__version__}", done.stdout + done.stderr
    assert bralib.__version__ == PYPROJECT["project"]["version"]


def test_the_license_file_is_the_one_pyproject_names():
    assert PYPROJECT["project"]["license"] == "MIT"
    text = (REPO_ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License") and "WITHOUT WARRANTY OF ANY KIND" in text
