"""The import graph of flowforge: no cycles between subpackages, no import from a lower layer up.

The graph is read from the source with ``ast``, nothing is imported: an import inside a function
or under ``if TYPE_CHECKING:`` counts as much as one at the top of a module, and relative and
absolute imports alike. The layer order is written down in docs/architecture.md ("Layers").
Run this file as a script to print the graph.
"""

from __future__ import annotations

import ast
import itertools
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "flowforge"

#: Bottom to top: a module may import only from its own layer or lower ones. Each layer is a
#: subpackage or a top-level module of flowforge; "flowforge" is the package itself
#: (``__init__``, ``__main__``), which imports every layer.
LAYERS = (
    "_version",
    "_checks",
    "_registry",
    "estimators",
    "nets",
    "transforms",
    "distributions",
    "dynamics",
    "matching",
    "diffusion",
    "models",
    "data",
    "metrics",
    "train",
    "viz",
    "compare",
    "cli",
    "flowforge",
)

#: What the estimators may import besides the standard library: they sit at the bottom so that
#: residual transforms and continuous-time models can share them.
ESTIMATOR_IMPORTS = ("torch", "flowforge._checks", "flowforge._registry")


@dataclass(frozen=True)
class Import:
    """One import statement's target, resolved to a module name, and where it is written."""

    source: str  # the importing module, e.g. "flowforge.transforms.residual"
    target: str  # the imported module, e.g. "flowforge.estimators"
    where: str  # "flowforge/transforms/residual.py:14"

    @property
    def edge(self) -> tuple[str, str]:
        return layer_of(self.source), layer_of(self.target)


def layer_of(module: str) -> str:
    """The layer of a flowforge module: its subpackage or top-level module, or "flowforge"."""
    parts = module.split(".")
    if len(parts) == 1 or parts[1] in ("__init__", "__main__"):
        return "flowforge"
    return parts[1]


def _module_name(path: Path, root: Path) -> tuple[str, bool]:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    return ".".join(parts[:-1] if is_package else parts), is_package


def _is_module(name: str, root: Path) -> bool:
    path = root.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imports(root: Path = SRC) -> Iterator[Import]:
    """Every import in every module under ``root`` (a package directory), resolved by name."""
    for path in sorted(root.rglob("*.py")):
        source, is_package = _module_name(path, root)
        package = source if is_package else source.rpartition(".")[0]
        where = path.relative_to(root.parent).as_posix()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield Import(source, alias.name, f"{where}:{node.lineno}")
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                for alias in node.names:
                    # `from pkg import name`: the submodule pkg.name if there is one, else pkg.
                    sub = f"{module}.{alias.name}"
                    target = sub if _is_module(sub, root) else module
                    yield Import(source, target, f"{where}:{node.lineno}")


def internal_imports(root: Path = SRC) -> list[Import]:
    """The imports from one layer of the package to another."""
    name = root.name
    found = []
    for imp in imports(root):
        if imp.target == name or imp.target.startswith(name + "."):
            if imp.edge[0] != imp.edge[1]:
                found.append(imp)
    return list(dict.fromkeys(found))  # `from m import a, b` is one import of m


def upward_imports(found: list[Import], layers: tuple[str, ...] = LAYERS) -> list[str]:
    """One line for each import from a layer to a higher one, or to a layer not in ``layers``."""
    rank = {layer: i for i, layer in enumerate(layers)}
    broken = []
    for imp in found:
        src, dst = imp.edge
        if src not in rank or dst not in rank:
            unknown = src if src not in rank else dst
            broken.append(f"{imp.where}: {unknown!r} has no place in LAYERS")
        elif rank[dst] > rank[src]:
            broken.append(
                f"{imp.where} imports {imp.target}: {src} (layer {rank[src]}) may not import "
                f"{dst} (layer {rank[dst]}), a higher layer"
            )
    return broken


def cycles(found: list[Import]) -> list[str]:
    """One line for each cycle of layers, with the imports that close it."""
    graph: dict[str, dict[str, str]] = {}
    for imp in found:
        graph.setdefault(imp.edge[0], {}).setdefault(imp.edge[1], imp.where)
    broken, seen = [], set()

    def visit(node: str, path: list[str]) -> None:
        for nxt in sorted(graph.get(node, {})):
            if nxt in path:
                loop = [*path[path.index(nxt) :], nxt]
                key = frozenset(itertools.pairwise(loop))
                if key not in seen:
                    seen.add(key)
                    steps = ", ".join(
                        f"{a} -> {b} ({graph[a][b]})" for a, b in itertools.pairwise(loop)
                    )
                    broken.append(f"cycle {' -> '.join(loop)}: {steps}")
            else:
                visit(nxt, [*path, nxt])

    for start in sorted(graph):
        visit(start, [start])
    return broken


def test_no_cycle_between_layers():
    broken = cycles(internal_imports())
    assert not broken, "import cycles between flowforge subpackages:\n" + "\n".join(broken)


def test_no_import_from_a_lower_layer_to_a_higher_one():
    broken = upward_imports(internal_imports())
    assert not broken, (
        "imports against the layer order (a module may import only from its own or lower "
        f"layers; LAYERS, bottom to top: {' < '.join(LAYERS)}):\n" + "\n".join(broken)
    )


def test_every_layer_exists():
    # A renamed or removed subpackage must leave LAYERS too, or the order would guard nothing.
    present = {layer_of(_module_name(p, SRC)[0]) for p in SRC.rglob("*.py")}
    assert set(LAYERS) == present, f"LAYERS {sorted(LAYERS)} != subpackages {sorted(present)}"


def test_estimators_import_only_torch_and_checks():
    allowed = set(sys.stdlib_module_names) | {"__future__"}
    broken = [
        f"{imp.where} imports {imp.target}"
        for imp in imports(SRC)
        if layer_of(imp.source) == "estimators"
        and not imp.target.startswith("flowforge.estimators")
        and imp.target.split(".")[0] not in allowed
        and not any(imp.target == a or imp.target.startswith(a + ".") for a in ESTIMATOR_IMPORTS)
    ]
    assert not broken, "flowforge.estimators may import only torch and _checks:\n" + "\n".join(
        broken
    )


def test_old_estimator_names_in_dynamics_are_the_estimators():
    import flowforge.dynamics
    import flowforge.estimators

    for name in flowforge.estimators.__all__:
        assert getattr(flowforge.dynamics, name) is getattr(flowforge.estimators, name), name


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / "flowforge" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root / "flowforge"


@pytest.mark.parametrize(
    "statement",
    [
        "from ..models import registry",
        "from .. import models",
        "import flowforge.models.registry",
        "from flowforge.models import registry",
        "def f():\n    from ..models.registry import REGISTRY\n",
    ],
)
def test_the_checks_see_a_planted_upward_import_and_its_cycle(tmp_path, statement):
    pkg = _write(
        tmp_path,
        {
            "__init__.py": "from . import models, nets\n",
            "nets/__init__.py": "",
            "nets/mlp.py": statement + "\n",
            "models/__init__.py": "",
            "models/registry.py": "from ..nets.mlp import MLP\n",
        },
    )
    layers = ("nets", "models", "flowforge")
    found = internal_imports(pkg)
    (upward,) = upward_imports(found, layers)
    assert upward.startswith("flowforge/nets/mlp.py:")
    assert "nets (layer 0) may not import models (layer 1)" in upward
    (cycle,) = cycles(found)
    assert cycle.startswith("cycle models -> nets -> models:")
    assert "flowforge/models/registry.py:1" in cycle


def test_the_checks_pass_a_clean_tree_and_reject_the_top_package(tmp_path):
    pkg = _write(
        tmp_path,
        {
            "__init__.py": "from . import models, nets\n",
            "nets/__init__.py": "from .._checks import check\n",
            "_checks.py": "",
            "models/__init__.py": "from ..nets import MLP\n",
        },
    )
    layers = ("_checks", "nets", "models", "flowforge")
    assert upward_imports(internal_imports(pkg), layers) == []
    assert cycles(internal_imports(pkg)) == []
    (pkg / "nets" / "__init__.py").write_text("from .. import __version__\n")
    (upward,) = upward_imports(internal_imports(pkg), layers)
    assert "nets (layer 1) may not import flowforge (layer 3)" in upward


if __name__ == "__main__":
    edges: dict[tuple[str, str], list[str]] = {}
    for imp in internal_imports():
        edges.setdefault(imp.edge, []).append(imp.where)
    for (src, dst), where in sorted(edges.items()):
        print(f"{src} -> {dst}: {', '.join(where)}")
