"""Layers only import downward: checked on the source (the kopf habit, without import-linter).

Lower layers never import higher ones, and no production module imports the simulator, so the
same code runs against a real cluster. Lazy imports inside functions count too.
"""

import ast
from pathlib import Path

import ravend

ROOT = Path(ravend.__file__).parent

# package -> packages it must never import
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "model": ("kube", "l3", "l7proxy", "election", "certs", "controllers", "sim", "app", "planes"),
    "runtime": ("kube", "l3", "l7proxy", "election", "certs", "controllers", "sim", "app"),
    "observe": ("kube", "l3", "l7proxy", "election", "certs", "controllers", "sim", "app"),
    "kube": ("l3", "l7proxy", "election", "certs", "controllers", "sim", "app", "planes", "roles"),
    "l3": ("l7proxy", "election", "controllers", "sim", "app", "planes"),
    "l7proxy": ("l3", "election", "controllers", "sim", "app", "planes"),
    "certs": ("l3", "l7proxy", "election", "controllers", "sim", "app", "planes"),
    "election": ("l3", "l7proxy", "controllers", "sim", "app", "planes"),
    "controllers": ("l3", "l7proxy", "sim", "app", "planes"),
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def _package_of(path: Path) -> str:
    rel = path.relative_to(ROOT)
    return rel.parts[0].removesuffix(".py")


def test_layers_import_downward() -> None:
    violations = []
    for path in sorted(ROOT.rglob("*.py")):
        package = _package_of(path)
        for banned in FORBIDDEN.get(package, ()):
            for module in _imports(path):
                if module == f"ravend.{banned}" or module.startswith(f"ravend.{banned}."):
                    violations.append(f"{path.relative_to(ROOT)} imports {module}")
    assert violations == []


def test_third_party_wrapped_once() -> None:
    owners = {"kubernetes_asyncio": "kube", "pyroute2": "l3"}
    violations = []
    for path in sorted(ROOT.rglob("*.py")):
        for module in _imports(path):
            top = module.split(".")[0]
            if top in owners and _package_of(path) != owners[top]:
                violations.append(f"{path.relative_to(ROOT)} imports {module}")
    assert violations == []
