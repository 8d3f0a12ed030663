"""The one error family, checked on the source (AST) of ``federation/``.

* No module raises a bare built-in error (``ValueError``, ``RuntimeError``,
  ...): input and remote data become one of ours, with a kind
  (``core.errors``). Foreign exceptions are caught at the boundary and
  re-raised as ours; that is not checked here, the decoders' fuzzers do.
* No ``assert`` statement: Python strips them under ``-O``.
* Every ``except Exception`` (or ``BaseException``, or a bare ``except:``)
  either re-raises (its last statement is a bare ``raise``) or says on its
  ``except`` line, or the line after it, why catching everything is right.
* No module builds an HTTP error answer itself (``web.HTTPNotFound(...)``,
  ``web.Response(status=4xx)``): handlers raise our errors and
  ``net/errors.py`` answers them. ``net/httpserver.py`` is the exception: it
  refuses requests that do not parse, before any app sees them.
"""
from __future__ import annotations

import ast
from pathlib import Path

import federation

PACKAGE = Path(federation.__file__).parent

BANNED = {"Exception", "BaseException", "ValueError", "RuntimeError", "TypeError", "KeyError", "IndexError",
          "LookupError", "AssertionError", "OverflowError", "AttributeError", "NotImplementedError",
          "UnicodeError", "UnicodeDecodeError", "ZeroDivisionError", "ArithmeticError"}
BROAD = {"Exception", "BaseException"}
ANSWERS_ERRORS = {"net/errors.py", "net/httpserver.py"}


def modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text()
        yield path.relative_to(PACKAGE).as_posix(), text, ast.parse(text, str(path))


def _name(node: ast.AST | None) -> str | None:
    if isinstance(node, ast.Call):
        node = node.func
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def test_no_module_raises_a_bare_builtin_error():
    found = [f"{rel}:{node.lineno}: raise {_name(node.exc)}"
             for rel, _, tree in modules() for node in ast.walk(tree)
             if isinstance(node, ast.Raise) and _name(node.exc) in BANNED]
    assert found == [], "raise one of federation.core.errors instead:\n" + "\n".join(found)


def test_no_assert_statements():
    found = [f"{rel}:{node.lineno}" for rel, _, tree in modules() for node in ast.walk(tree)
             if isinstance(node, ast.Assert)]
    assert found == [], "assert is stripped under -O; raise one of ours:\n" + "\n".join(found)


def _broad(handler: ast.ExceptHandler) -> bool:
    if handler.type is None:
        return True
    types = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return any(_name(t) in BROAD for t in types)


def _reraises(handler: ast.ExceptHandler) -> bool:
    last = handler.body[-1]
    return isinstance(last, ast.Raise) and last.exc is None


def test_every_broad_except_says_why():
    found = []
    for rel, text, tree in modules():
        lines = text.splitlines()
        for node in ast.walk(tree):
            if not isinstance(node, ast.ExceptHandler) or not _broad(node) or _reraises(node):
                continue
            said = "#" in lines[node.lineno - 1] or lines[node.lineno].lstrip().startswith("#")
            if not said:
                found.append(f"{rel}:{node.lineno}: {lines[node.lineno - 1].strip()}")
    assert found == [], "say in a comment why everything is caught here:\n" + "\n".join(found)


def test_only_the_error_map_builds_error_answers():
    found = []
    for rel, _, tree in modules():
        if rel in ANSWERS_ERRORS:
            continue
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            name = _name(node)
            if name and name.startswith("HTTP") and name != "HTTPException":
                found.append(f"{rel}:{node.lineno}: {name}(...)")
            for kw in node.keywords:
                if kw.arg == "status" and not (isinstance(kw.value, ast.Constant) and kw.value.value < 400):
                    found.append(f"{rel}:{node.lineno}: {name}(status={ast.unparse(kw.value)})")
    assert found == [], "raise one of federation.core.errors; net/errors.py answers it:\n" + "\n".join(found)


def test_the_scan_sees_what_it_looks_for():
    # The checks above pass on an empty package too: show they catch each case.
    bad = ast.parse("def f(x):\n    assert x\n    try:\n        g()\n    except Exception:\n        pass\n"
                    "    raise ValueError('no')\n    raise web.HTTPNotFound(text='x')\n")
    raises = [n for n in ast.walk(bad) if isinstance(n, ast.Raise)]
    assert [_name(r.exc) for r in raises] == ["ValueError", "HTTPNotFound"]
    assert any(isinstance(n, ast.Assert) for n in ast.walk(bad))
    handler = next(n for n in ast.walk(bad) if isinstance(n, ast.ExceptHandler))
    assert _broad(handler) and not _reraises(handler)
