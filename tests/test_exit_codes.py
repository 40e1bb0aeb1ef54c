"""docs/exit-codes.md, README's table and src/sitestack/errors.py say the same thing.

Other engineers add error classes: when one is missing from the doc, the failure names the
class, its code and the row to add it to.
"""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest

from sitestack import errors

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "exit-codes.md"
README = REPO / "README.md"
SRC = REPO / "src" / "sitestack"

# Codes the CLI returns without an exception class behind them (cli.main, check/doctor/verify).
CODES_WITHOUT_CLASS = {0, 1, 130}


def _cells(line: str) -> list[str]:
    # Split on unescaped pipes: examples may hold `\|` (a shell pipeline).
    return [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]


def table(path: Path) -> dict[int, list[str]]:
    """{code: [meaning, ...other cells]} from the first table whose rows start with a code."""
    rows: dict[int, list[str]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        cells = _cells(line) if line.lstrip().startswith("|") else []
        if cells and cells[0].isdigit():
            code = int(cells[0])
            assert code not in rows, f"{path.name}: code {code} has two rows"
            rows[code] = cells[1:]
    assert rows, f"{path.name}: no exit-code table found"
    return rows


def error_classes() -> dict[str, int]:
    return {name: cls.exit_code for name, cls in inspect.getmembers(errors, inspect.isclass)
            if issubclass(cls, errors.SitestackError) and cls.__module__ == errors.__name__}


def doc_classes(rows: dict[int, list[str]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for code, cells in rows.items():
        assert len(cells) == 3, f"docs/exit-codes.md: row {code} needs 4 cells (code, meaning, error classes, examples)"
        for name in re.findall(r"`(\w+)`", cells[1]):
            assert name not in out, f"docs/exit-codes.md: {name} is listed under codes {out[name]} and {code}"
            out[name] = code
    return out


def test_every_error_class_is_listed_under_its_code() -> None:
    rows = table(DOC)
    listed = doc_classes(rows)
    problems = []
    for name, code in sorted(error_classes().items()):
        if code not in rows:
            problems.append(f"{name} (exit {code}): docs/exit-codes.md has no row for code {code}; "
                            f"add `| {code} | meaning | `{name}` | example |`")
        elif listed.get(name) != code:
            where = f" (it is listed under code {listed[name]})" if name in listed else ""
            problems.append(f"{name} (exit {code}): add `{name}` to the 'error classes' cell of the "
                            f"row for code {code} in docs/exit-codes.md{where}")
    assert not problems, "\n".join(problems)


def test_doc_names_no_class_that_does_not_exist() -> None:
    known = error_classes()
    stale = sorted(set(doc_classes(table(DOC))) - set(known))
    assert not stale, f"docs/exit-codes.md lists {stale}, which src/sitestack/errors.py does not define"


def test_every_code_is_documented_and_none_is_made_up() -> None:
    codes = set(error_classes().values()) | CODES_WITHOUT_CLASS
    documented = set(table(DOC))
    assert codes - documented == set(), f"docs/exit-codes.md has no row for code(s) {sorted(codes - documented)}"
    assert documented - codes == set(), f"docs/exit-codes.md documents code(s) {sorted(documented - codes)} nothing returns"
    for code, cells in table(DOC).items():
        assert cells[0] and cells[2], f"docs/exit-codes.md: row {code} needs a meaning and an example"


def test_readme_table_agrees_with_the_doc() -> None:
    doc = {code: cells[0] for code, cells in table(DOC).items()}
    readme = {code: cells[0] for code, cells in table(README).items()}
    assert readme == doc, (
        "README's 'Exit codes' table and docs/exit-codes.md disagree: "
        + "; ".join(f"code {c}: README {readme.get(c)!r} vs doc {doc.get(c)!r}"
                    for c in sorted(set(doc) | set(readme)) if readme.get(c) != doc.get(c)))


def test_errors_docstring_lists_the_same_codes() -> None:
    doc_codes = {int(m) for m in re.findall(r"^\s+(\d+) ", errors.__doc__ or "", re.MULTILINE)}
    assert doc_codes == set(table(DOC)), f"errors.py's docstring lists codes {sorted(doc_codes)}"


@pytest.mark.parametrize("path", sorted(p for p in SRC.rglob("*.py") if p.name != "errors.py"),
                         ids=lambda p: str(p.relative_to(SRC)))
def test_no_error_class_outside_errors_py(path: Path) -> None:
    names = set(error_classes()) | {"Exception", "BaseException"}
    bad = [node.name for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
           if isinstance(node, ast.ClassDef)
           and any(isinstance(b, ast.Name | ast.Attribute) and (b.id if isinstance(b, ast.Name) else b.attr) in names
                   for b in node.bases)]
    assert not bad, f"{path.relative_to(REPO)} defines error class(es) {bad}: they belong in src/sitestack/errors.py"
