"""The notebooks run headless (nbclient) and draw their plots, so they never rot (DESIGN.md §2)."""

from __future__ import annotations

import nbformat
from nbclient import NotebookClient

from tandem.settings import PROJECT_ROOT

NOTEBOOKS = PROJECT_ROOT / "notebooks"


def execute(name: str, timeout: int = 300) -> nbformat.NotebookNode:
    """Run a notebook from the notebooks/ directory (as a person would open it); raise on any failing cell."""
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(nb, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    return nb


def images(nb: nbformat.NotebookNode) -> int:
    return sum(1 for cell in nb.cells if cell.cell_type == "code" for out in cell.get("outputs", [])
               if "image/png" in out.get("data", {}))


def text(nb: nbformat.NotebookNode) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", ""))
            parts.append(out.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)
