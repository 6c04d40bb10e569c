"""Imports run one way, the way data flows: a package imports only the layers before it.

    base (config, model, space, ...) <- measure <- variants, confirm <- study <- results <- entry

Every ``import`` of autotune's own modules counts, those inside functions and under
``TYPE_CHECKING`` included: a lazy import is still a dependency a reader must follow.
"""

from __future__ import annotations

import ast
from pathlib import Path

import autotune

ROOT = Path(autotune.__file__).parent
PACKAGES = ("measure", "confirm", "variants", "study", "results")
ENTRY = ("cli", "tuning", "check", "doctor", "zoo", "service", "__init__")
#: What each layer may import besides itself.
ALLOWED = {
    "base": {"base"},
    "measure": {"base"},
    "variants": {"base", "measure"},
    "confirm": {"base", "measure"},
    "study": {"base", "measure", "confirm", "variants"},
    "results": {"base", "measure", "confirm", "variants", "study"},
    "entry": {"base", "measure", "confirm", "variants", "study", "results", "entry"},
}


def layer(module: str) -> str:
    parts = module.split(".")
    name = parts[1] if len(parts) > 1 else "__init__"
    if name in PACKAGES:
        return name
    return "entry" if name in ENTRY else "base"


def imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("autotune"):
            if node.module == "autotune":
                found += [f"autotune.{alias.name}" for alias in node.names]
            else:
                found.append(node.module)
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.startswith("autotune")]
    return found


def test_imports_run_one_way() -> None:
    wrong = []
    for path in sorted(ROOT.rglob("*.py")):
        module = ".".join(("autotune", *path.relative_to(ROOT).with_suffix("").parts))
        here = layer(module)
        for target in imports(path):
            if layer(target) not in ALLOWED[here] | {here}:
                wrong.append(f"{module} ({here}) imports {target} ({layer(target)})")
    assert not wrong, "\n".join(wrong)


def test_only_the_study_package_imports_optuna() -> None:
    users = [
        str(path.relative_to(ROOT))
        for path in ROOT.rglob("*.py")
        if any(
            isinstance(node, ast.Import | ast.ImportFrom)
            and any(
                (getattr(node, "module", None) or alias.name).split(".")[0] == "optuna"
                for alias in node.names
            )
            for node in ast.walk(ast.parse(path.read_text()))
        )
    ]
    assert users and all(user.startswith("study/") for user in users), users
