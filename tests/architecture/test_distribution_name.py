"""The distribution is ``hashlist-federation``; every install line says so.

``federation`` on PyPI is an unrelated library (issue 14), so a doc line
``pip install federation`` installs the wrong package. The import package
and the command stay ``federation``.
"""
from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DISTRIBUTION = "hashlist-federation"


def test_pyproject_names_the_distribution_and_keeps_the_command():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["name"] == DISTRIBUTION
    assert project["scripts"] == {"federation": "federation.cli.main:main"}


def _install_lines():
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for n, line in enumerate(doc.read_text().splitlines(), 1):
            for m in re.finditer(r"pip install ([^&|;#\n]*)", line):
                yield doc.name, n, m[1]


def test_no_install_line_names_the_pypi_project_called_federation():
    lines = list(_install_lines())
    assert lines, "the docs have install lines"
    wrong = []
    for doc, n, args in lines:
        for arg in shlex.split(args):
            name = re.split(r"[\[<>=!~ @]", arg, maxsplit=1)[0].strip("'\"")
            if name.lower() == "federation":
                wrong.append(f"{doc}:{n}: pip install {args.strip()}")
    assert not wrong, "install lines naming PyPI's unrelated 'federation': " + "; ".join(wrong)
