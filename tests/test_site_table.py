"""The site table is the engine's one source of facts about a site (issue 16).

Checks that the README's site table is the table, that no engine module outside ``sites.py``
decides anything by a site's name, and that a scheme made of existing sites is one registry
entry: the README's example entry is registered here and runs on every path.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import torch

from benchmark.engine import GRU, LSTM, SITE_TABLE, SITES, resolve, schemes
from benchmark.engine.schemes import Scheme, Site

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def readme_site_rows() -> list[list[str]]:
    block = README[README.index("| site | what is masked | mask width |"):]
    lines = block.split("\n\n")[0].splitlines()[2:]
    return [[c.strip() for c in line.strip("|").split(" | ")] for line in lines]


def test_the_readme_site_table_is_the_site_table():
    yes = {True: "yes", False: "no"}
    expected = [[f"`{s.name}`", s.doc, s.width, yes[s.in_recurrence], yes[s.carried],
                 "the expectation" if s.draw == "keep_previous" else "identity (`test` scaling: x keep)"] for s in SITE_TABLE]
    assert readme_site_rows() == expected


def _site_literals(tree: ast.AST) -> list[str]:
    """Places where code decides by a site's name: comparisons, subscripts and .get() with a site literal."""
    found = []
    for node in ast.walk(tree):
        candidates = []
        if isinstance(node, ast.Compare):
            candidates = [node.left, *node.comparators]
        elif isinstance(node, ast.Subscript):
            candidates = [node.slice]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get":
            candidates = node.args[:1]
        found += [f"line {node.lineno}: {c.value!r}" for c in candidates
                  if isinstance(c, ast.Constant) and c.value in SITES]
    return found


@pytest.mark.parametrize("path", sorted(p.name for p in (ROOT / "benchmark" / "engine").glob("*.py")
                                        if p.name != "sites.py"))
def test_no_engine_module_branches_on_a_site_name(path):
    tree = ast.parse((ROOT / "benchmark" / "engine" / path).read_text())
    assert _site_literals(tree) == [], f"{path} decides by a site's name; read the site's record instead"


def test_the_check_itself_catches_a_branch_on_a_site_name():
    assert _site_literals(ast.parse('if name == "zoneout":\n    pass\nm = masks.get("out")')) == [
        "line 1: 'zoneout'", "line 3: 'out'"]


def readme_example() -> Scheme:
    code = re.search(r"```python\n(Scheme\(\n.*?\n\),)\n```", README, re.S).group(1)
    return eval(code.rstrip(","), {"Scheme": Scheme, "Site": Site})  # noqa: S307 - the README's own example


@pytest.mark.parametrize("cls", [LSTM, GRU])
def test_the_readme_example_is_one_entry_and_runs_on_every_path(cls, monkeypatch):
    entry = readme_example()
    monkeypatch.setattr(schemes, "SCHEMES", {**schemes.SCHEMES, entry.name: entry})
    cell = "lstm" if cls is LSTM else "gru"
    plan = resolve(entry.name, cell, 0.3)
    assert set(plan.sites) == {"x", "h_in", "g", "out"} and plan.needs_loop(True) and not plan.needs_loop(False)
    assert plan.describe()["sites"]["g"]["granularity"] == "sequence"
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 3, 4, dtype=torch.double, generator=g, requires_grad=True)
    results = []
    for impl in ("auto", "reference"):
        torch.manual_seed(0)
        module = cls(4, 5, 2, scheme=entry.name, dropout=0.3, impl=impl).double()
        torch.manual_seed(1)
        out, _ = module(x)
        results.append((out, torch.autograd.grad(out.pow(2).sum(), [x, *module.parameters()])))
        assert module.last_masks[(0, "g")].shape == (3, 5) and module.last_masks[(0, "h_in")].shape == (
            4 if cell == "lstm" else 3, 3, 5)  # one mask per sequence; untied: one per gate
    (o1, g1), (o2, g2) = results
    torch.testing.assert_close(o1, o2, rtol=1e-10, atol=1e-12)
    for a, b in zip(g1, g2, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert cls(4, 5, scheme=entry.name, dropout=0.3).path(False) == "native"  # eval: every site is the identity
