"""The package's shape: what installs under which name, which layer imports which, and no module
reaching into another's private names. These are the rules docs/architecture.md states."""

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "ppvae"
# the engine's layers, lowest first; a module may import its own layer and the layers below it.
# The process group (distributed.process) sits with core: training's collectives use it, while
# the sharded estimators above it use everything else.
LAYERS = {"core": 0, "nn": 0, "data": 0, "distributed.process": 0, "infer": 1, "train": 1,
          "analysis": 2, "distributed": 3, "app": 4}


def _layer(parts: list[str]) -> str | None:
    """The layer of module ``ppvae.<parts>``: its longest prefix in LAYERS."""
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in LAYERS:
            return ".".join(parts[:n])
    return None


def _modules():
    files = [*PKG.rglob("*.py"), *(ROOT / "models").glob("*.py"), *(ROOT / "guides").glob("*.py")]
    return sorted(files)


def _dotted(path: Path) -> list[str]:
    rel = path.relative_to(ROOT).with_suffix("").parts
    parts = ["ppvae", *rel] if rel[0] in ("models", "guides") else list(rel)
    return parts[:-1] if parts[-1] == "__init__" else parts


def _imports(path: Path):
    """(absolute module, imported names, line) of every ``from ... import`` in ``path``."""
    tree = ast.parse(path.read_text())
    pkg = _dotted(path) if path.name == "__init__.py" else _dotted(path)[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg[: len(pkg) - node.level + 1]
                mod = ".".join([*base, *(node.module.split(".") if node.module else [])])
            else:
                mod = node.module or ""
            yield mod, [a.name for a in node.names], node.lineno
        elif isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, [], node.lineno


def test_models_and_guides_install_under_ppvae_only(tmp_path):
    run = [sys.executable, "-c"]
    bare = subprocess.run([*run, "import models"], cwd=tmp_path, capture_output=True, text=True)
    assert bare.returncode != 0 and "No module named 'models'" in bare.stderr
    ok = subprocess.run([*run, "from ppvae.models import VAE; from ppvae.guides import MLPEncoder"],
                        cwd=tmp_path, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr


def test_every_subpackage_is_installed():
    """A package folder missing from pyproject's list works in the editable checkout but not
    from a wheel; this keeps the list complete."""
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
                 ["packages"])
    found = {".".join(_dotted(p)) for p in _modules() if p.name == "__init__.py"}
    assert found == listed


def test_no_module_imports_a_private_name_of_another():
    offenders = [f"{p.relative_to(ROOT)}:{line} imports {n} from {mod}"
                 for p in _modules() for mod, names, line in _imports(p)
                 if mod.startswith("ppvae") for n in names
                 if n.startswith("_") and not n.startswith("__")]
    assert not offenders, "\n".join(offenders)


def test_layers_import_downwards_and_only_the_app_imports_the_zoo():
    wrong = []
    for p in PKG.rglob("*.py"):
        layer = _layer(_dotted(p)[1:])
        if layer is None:
            continue
        for mod, names, line in _imports(p):
            target = mod.split(".")
            if target[0] != "ppvae" or len(target) < 2:
                continue
            # `from ..distributed import process` names the module in `names`
            to = _layer([*target[1:], *names[:1]]) if len(names) == 1 else _layer(target[1:])
            if target[1] in ("models", "guides") and layer != "app":
                wrong.append(f"{p.relative_to(ROOT)}:{line} imports the zoo ({mod})")
            elif to is not None and LAYERS[to] > LAYERS[layer]:
                wrong.append(f"{p.relative_to(ROOT)}:{line} ({layer}) imports {mod}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("path", [p for p in _modules() if p.name != "__main__.py"],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_every_module_says_what_it_does_and_what_it_exports(path):
    tree = ast.parse(path.read_text())
    assert ast.get_docstring(tree), f"{path.relative_to(ROOT)} has no module docstring"
    names = {t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets
             if isinstance(t, ast.Name)}
    defines = any(isinstance(n, ast.FunctionDef | ast.ClassDef | ast.ImportFrom)
                  for n in tree.body)
    assert "__all__" in names or not defines, f"{path.relative_to(ROOT)} has no __all__"


def test_functions_fit_on_a_screen():
    """No function in the package is longer than 80 lines (docstring included)."""
    long = [f"{p.relative_to(ROOT)}:{n.lineno} {n.name} ({n.end_lineno - n.lineno + 1} lines)"
            for p in _modules() for n in ast.walk(ast.parse(p.read_text()))
            if isinstance(n, ast.FunctionDef) and n.end_lineno - n.lineno + 1 > 80]
    assert not long, "\n".join(long)
