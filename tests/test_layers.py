"""The package's layers import only the layers above them (docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import cellvi

PACKAGE = Path(cellvi.__file__).parent

#: Layer of each subpackage or top-level module; a file may import its own layer or lower.
LAYERS = {
    "cellvi._constants": 0,
    "cellvi._checks": 0,
    "cellvi._settings": 0,
    "cellvi._version": 0,
    "cellvi.utils": 0,
    # Pictures from plain tables and arrays: no other part of cellvi.
    "cellvi.plotting": 0,
    "cellvi.data": 1,
    "cellvi.distributions": 2,
    "cellvi.nn": 2,
    "cellvi.module": 3,
    "cellvi.dataloaders": 4,
    "cellvi.train": 4,
    "cellvi.model": 5,
    "cellvi": 6,
    # The command line, on top of everything (the package itself does not import it).
    "cellvi.cli": 7,
}


#: Layers that see tensors only, never AnnData: they may not import the data layer either.
TENSORS_ONLY = ("cellvi.distributions", "cellvi.nn", "cellvi.module", "cellvi.train")


def layer_of(module: str) -> int:
    """Layer of a dotted cellvi module name: that of its longest listed prefix."""
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        prefix = ".".join(parts[:end])
        if prefix in LAYERS:
            return LAYERS[prefix]
    raise KeyError(f"{module} belongs to no layer; add its package to LAYERS.")


def module_name(path: Path) -> str:
    """Dotted name of a file of the package (``cellvi.module._vae``)."""
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def cellvi_imports(source: str, name: str, is_package: bool) -> list[tuple[int, str]]:
    """``(line, module)`` of every cellvi import in ``source``, type-checking ones included.

    ``name`` is the dotted name of the file the source is from, so that relative imports
    resolve; ``is_package`` says whether it is an ``__init__.py``.
    """
    package = name.split(".") if is_package else name.split(".")[:-1]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join(base + ([module] if module else []))
            found.append((node.lineno, module))
    return [(line, module) for line, module in found if module.split(".")[0] == "cellvi"]


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def upward_imports(source: str, name: str, is_package: bool = False) -> list[str]:
    """The imports of ``source`` that reach a layer above the file's own, or AnnData.

    A tensors-only layer importing the data layer counts as well.
    """
    own = layer_of(name)
    tensors_only = any(_within(name, package) for package in TENSORS_ONLY)
    return [
        f"line {line}: {module} (layer {layer_of(module)})"
        for line, module in cellvi_imports(source, name, is_package)
        if layer_of(module) > own or (tensors_only and _within(module, "cellvi.data"))
    ]


FILES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", FILES, ids=[module_name(p) for p in FILES])
def test_no_file_imports_a_higher_layer(path: Path) -> None:
    name = module_name(path)
    upward = upward_imports(path.read_text(), name, path.name == "__init__.py")
    assert not upward, f"{name} (layer {layer_of(name)}) imports higher layers: {upward}"


def test_the_walk_sees_relative_and_type_checking_imports() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "from ._device import module_device\n"
        "if TYPE_CHECKING:\n"
        "    from ...model import SCVI\n"
        "import cellvi.data\n"
    )
    found = upward_imports(source, "cellvi.module.base._pyro_module")
    assert sorted(found) == ["line 4: cellvi.model (layer 5)", "line 5: cellvi.data (layer 1)"]
    assert upward_imports("from . import fields\n", "cellvi.data", is_package=True) == []
    assert upward_imports(source, "cellvi.model.base._files") == []
    # The old REGISTRY_KEYS import of the VAE: tensors-only code reaching the data layer.
    old = "from cellvi.data._constants import REGISTRY_KEYS\n"
    assert upward_imports(old, "cellvi.module._vae") == [
        "line 1: cellvi.data._constants (layer 1)"
    ]


def test_the_plotting_layer_imports_no_other_part_of_cellvi() -> None:
    for path in sorted((PACKAGE / "plotting").rglob("*.py")):
        name = module_name(path)
        imports = cellvi_imports(path.read_text(), name, path.name == "__init__.py")
        outside = [module for _, module in imports if not _within(module, "cellvi.plotting")]
        assert not outside, f"{name} imports {outside}"


def test_importing_cellvi_does_not_import_the_command_line() -> None:
    source = (PACKAGE / "__init__.py").read_text()
    assert not [m for _, m in cellvi_imports(source, "cellvi", True) if _within(m, "cellvi.cli")]


def test_the_module_layer_reads_registry_keys_from_the_shared_constants() -> None:
    from cellvi import REGISTRY_KEYS
    from cellvi._constants import REGISTRY_KEYS as shared
    from cellvi.data import REGISTRY_KEYS as from_data

    assert REGISTRY_KEYS is shared is from_data
