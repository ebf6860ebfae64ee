"""The package is in layers, and imports only go down: a module may import its own layer or a lower
one, never a higher one. Imports inside functions count too (a lazy import is still a dependency)."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "accel_signs"
LAYERS = {"core": 0, "config": 1, "data": 2, "model": 3, "extractors": 4, "training": 5, "tools": 6, "serve": 7}
TOP = 8  # cli.py, __main__.py and the root __init__ (the public API) sit above everything


def module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> int:
    """The layer of a module of the package: its subpackage's, or the top for the root's modules."""
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in LAYERS:
        return LAYERS[parts[1]]
    return TOP  # accel_signs itself, accel_signs.cli, accel_signs.__main__


def imported_modules(path: Path, root: Path = PACKAGE) -> list[tuple[int, str]]:
    """(line, module) for every import of the package in the file, relative ones resolved."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if base == "accel_signs":
                # `from accel_signs import data` names a subpackage; `import x` of a name is the root's API
                out += [(node.lineno, f"accel_signs.{a.name}" if a.name in LAYERS else base) for a in node.names]
            else:
                out.append((node.lineno, base))
    return [(line, m) for line, m in out if m == "accel_signs" or m.startswith("accel_signs.")]


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_every_module_has_a_layer():
    assert MODULES, PACKAGE
    for path in MODULES:
        parts = path.relative_to(PACKAGE).parts
        assert len(parts) == 1 or parts[0] in LAYERS, f"{path}: a folder that is no layer"


@pytest.mark.parametrize("path", MODULES, ids=[str(p.relative_to(PACKAGE)) for p in MODULES])
def test_imports_only_go_down(path):
    own = layer(module_name(path))
    upward = [
        f"{path.relative_to(PACKAGE.parent)}:{line} imports {m} (layer {layer(m)} > {own})"
        for line, m in imported_modules(path)
        if layer(m) > own
    ]
    assert not upward, "\n".join(upward)


def test_the_checker_sees_upward_imports(tmp_path):
    """The test itself: a lazy import of a higher layer, a relative one and the root are all caught."""
    source = "def f():\n    from accel_signs.training.loop import train\n    from ..tools import info\n    import accel_signs\n"
    fake = tmp_path / "accel_signs" / "data" / "store.py"
    fake.parent.mkdir(parents=True)
    fake.write_text(source)
    assert layer(module_name(fake, tmp_path / "accel_signs")) == 2
    assert [layer(m) for _, m in imported_modules(fake, tmp_path / "accel_signs")] == [5, 6, TOP]
