"""The README and the docs name files that exist: result files, presets, scripts, modules."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PATH = re.compile(r"\b((?:benchmarks|configs|src/l2o|examples|tests|docs)/[\w./-]*\w)")


def _pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def test_every_path_named_in_the_readme_and_docs_exists():
    missing = []
    for page in _pages():
        for path in PATH.findall(page.read_text()):
            path = path.rstrip(".")
            if not (ROOT / path).exists() and not any(c in path for c in "*<>{}"):
                missing.append(f"{page.relative_to(ROOT)}: {path}")
    assert missing == []


def test_the_readme_starts_with_the_two_commands_and_stays_short():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 150
    head = "\n".join(lines[:8])
    assert "make demo" in head and "make test" in head


def test_every_module_run_in_the_readme_and_docs_exists():
    import importlib.util

    # benchmarks/ imports from the repository root (pytest's pythonpath in pyproject.toml)
    modules = {m for page in _pages() for m in re.findall(r"python -m ([\w.]+)", page.read_text())}
    assert modules
    assert sorted(m for m in modules if importlib.util.find_spec(m) is None) == []
