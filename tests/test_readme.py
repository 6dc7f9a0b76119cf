"""Every Python block of the README runs, so that the README cannot drift from the code.

The blocks run in order, in one namespace per block, in a temporary directory holding the
files they read (``molecule.xyz``: C9H4; ``frames.extxyz``: C9H4 and C7H4).  A block right
after a line ``<!-- readme-test: skip: REASON -->`` is skipped with that reason (blocks that
need files no test has, e.g. a reference-code run).  Shell blocks are not run here; the
``efa-md``/``efa-calc`` commands they show have their own tests.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
_BLOCK = re.compile(r"(?:<!-- readme-test: skip: (?P<skip>[^>]*?) -->\n)?```python\n(?P<code>.*?)```", re.S)


def python_blocks() -> list[tuple[int, str, str | None]]:
    text = README.read_text()
    return [(text[: m.start()].count("\n") + 1, m["code"], m["skip"]) for m in _BLOCK.finditer(text)]


def test_readme_has_python_blocks():
    assert len(python_blocks()) >= 3


@pytest.mark.parametrize("line, code, skip", python_blocks(), ids=lambda v: f"line{v}" if isinstance(v, int) else "")
def test_readme_python_block_runs(line, code, skip, tmp_path, monkeypatch):
    if skip:
        pytest.skip(f"README line {line}: {skip}")
    from ase.io import write

    from efa_calc import list_models
    from efa_calc.structures import cumulene

    if "cumulene-efa" not in list_models():
        pytest.skip("the bundled models are absent")
    write(tmp_path / "molecule.xyz", cumulene(9, 90.0), format="xyz")
    write(tmp_path / "frames.extxyz", [cumulene(9, 90.0), cumulene(7, 90.0)])
    monkeypatch.chdir(tmp_path)
    exec(compile(code, f"README.md:{line}", "exec"), {"__name__": "__readme__"})
