"""The tutorials in ``docs/tutorials`` run end to end, as a reader would run them."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pyro
import pytest
import torch

import cellvi

TUTORIALS = Path(__file__).resolve().parents[2] / "docs" / "tutorials"
_BLOCK = re.compile(r"^```python\n(.*?)^```", flags=re.DOTALL | re.MULTILINE)


def python_code(path: Path) -> str:
    """The fenced ``python`` blocks of a markdown file, joined in order."""
    blocks = _BLOCK.findall(path.read_text())
    assert blocks, f"{path.name} has no python block"
    return "\n\n".join(blocks)


@pytest.fixture(autouse=True)
def _quiet_single_thread(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Run in a scratch directory, on one torch thread, and leave global state as found."""
    monkeypatch.chdir(tmp_path)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    cellvi.settings.seed = None
    pyro.get_param_store().clear()


@pytest.mark.parametrize("name", ["build_a_module.md", "build_a_model.md"])
def test_tutorial_runs(name: str) -> None:
    path = TUTORIALS / name
    namespace: dict[str, object] = {"__name__": f"tutorial_{path.stem}"}
    exec(compile(python_code(path), str(path), "exec"), namespace)


def test_module_tutorial_avoids_the_seed_bugs() -> None:
    """The upstream tutorial's errors: wrong NB argument names, undefined guide scale."""
    code = python_code(TUTORIALS / "build_a_module.md")
    assert "total_counts" not in code and "total=" not in code
    assert "z_scale" not in code
    guide = code[code.index("def guide") :]
    assert "self.var_encoder" in guide[: guide.index("pyro.sample")]
