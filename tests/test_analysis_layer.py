"""``analysis`` never imports ``runners``, ``benchmark`` or torch: the dependency runs one way (issues 15, 27).

``runners`` trains and writes the run store; ``benchmark`` measures and writes JSON;
``analysis`` reads both, and must keep working on a laptop where the training side is not
installed. What both sides need (the W&B mode rule, the run store's format) lives in
``analysis`` and ``runners`` imports it from there. Read from the source with ``ast``
(imports inside functions, relative imports and ``importlib.import_module`` calls with a
literal name included), not by importing or grepping.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = ("runners", "benchmark", "torch")


def imported_modules(source: str, module: str, is_package: bool = False) -> set[str]:
    """Every absolute module name ``source`` (the text of ``module``) imports."""
    package = module if is_package else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = parts[:len(parts) - node.level + 1] if node.level <= len(parts) else []
                prefix = ".".join(base)
                names.add(".".join(p for p in (prefix, node.module) if p))
            else:
                names.add(node.module or "")
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            if called in ("import_module", "__import__"):
                names.add(node.args[0].value)
    return names


def forbidden_imports(path: Path) -> set[str]:
    parts = path.relative_to(ROOT).with_suffix("").parts
    is_package = parts[-1] == "__init__"
    module = ".".join(parts[:-1] if is_package else parts)
    names = imported_modules(path.read_text(), module, is_package)
    return {n for n in names if n.split(".")[0] in FORBIDDEN}


def test_no_module_under_analysis_imports_runners_benchmark_or_torch():
    files = sorted((ROOT / "analysis").rglob("*.py"))
    assert len(files) > 5
    found = {str(p.relative_to(ROOT)): sorted(forbidden_imports(p)) for p in files}
    assert {k: v for k, v in found.items() if v} == {}, "analysis/ must not import runners/, benchmark/ or torch"


def test_the_check_sees_every_way_of_importing():
    sources = {
        "from runners.tracking import resolve_mode": "runners.tracking",
        "def f():\n    import runners.job\n": "runners.job",
        "from ..runners import tracking": "runners",  # relative, from analysis.dashboard
        "import importlib\nimportlib.import_module('runners.tracking')": "runners.tracking",
        "__import__('runners')": "runners",
    }
    for source, expected in sources.items():
        assert expected in imported_modules(source, "analysis.dashboard"), source
    assert imported_modules("from .wandb_mode import resolve_mode", "analysis.dashboard") == {"analysis.wandb_mode"}


def test_runners_take_the_wandb_mode_rule_and_the_store_format_from_analysis():
    assert "analysis.wandb_mode" in imported_modules((ROOT / "runners" / "tracking.py").read_text(), "runners.tracking")
    assert "analysis.wandb_mode" in imported_modules((ROOT / "analysis" / "dashboard.py").read_text(),
                                                     "analysis.dashboard")
    for writer in ("run_store", "job", "checkpoints"):
        assert "analysis.store_format" in imported_modules((ROOT / "runners" / f"{writer}.py").read_text(),
                                                           f"runners.{writer}"), writer
