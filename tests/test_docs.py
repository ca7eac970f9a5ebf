"""The documentation cannot drift from the code.

- Every object the API reference names (`::: module.object` in docs/api/*.md) exists, and every
  argument its docstring lists under **Arguments:** (`- `name`: ...`) is a parameter of its
  signature (a pure-Python check, no docs tools needed).
- With the `docs` extra installed, `mkdocs build --strict` succeeds (as in .ci/run).
"""

import importlib
import importlib.util
import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
IDENTIFIER = re.compile(r"^::: ([\w.]+)\s*$", re.M)
ARGUMENT = re.compile(r"^\s*- `(\w+)`(?:,\s*`(\w+)`)*", re.M)


def _documented_objects():
    for page in sorted((ROOT / "docs" / "api").glob("*.md")):
        for name in IDENTIFIER.findall(page.read_text()):
            yield page.name, name


def _resolve(dotted: str):
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(dotted)


def _arguments_section(doc: str) -> str:
    match = re.search(r"\*\*Arguments:\*\*(.*?)(?:\n\s*\*\*\w[\w ]*:\*\*|\Z)", doc, re.S)
    return match.group(1) if match else ""


def test_api_reference_names_existing_objects_and_their_real_arguments():
    seen = 0
    for page, dotted in _documented_objects():
        obj = _resolve(dotted)  # an AttributeError / ImportError names the page's stale entry
        seen += 1
        doc = inspect.getdoc(obj) if not inspect.ismodule(obj) else None
        if not doc or "**Arguments:**" not in doc or not callable(obj):
            continue
        try:
            params = set(inspect.signature(obj).parameters)
        except (TypeError, ValueError):
            continue
        for line in ARGUMENT.finditer(_arguments_section(doc)):
            for name in re.findall(r"`(\w+)`", line.group(0)):
                assert name in params, f"docs/api/{page}: {dotted} documents an argument `{name}` it does not take"
    assert seen > 40


@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("mkdocstrings") is None,
                    reason="the docs extra is not installed (pip install '.[docs]'); .ci/run builds the docs")
def test_docs_build_strict(tmp_path):
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "site" / "api" / "observables" / "index.html").exists()
