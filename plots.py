"""The one matplotlib setup (no display needed) and atomic figure saving, for every script that draws."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from tables import atomic_output


def pyplot():
    """matplotlib.pyplot with the file-only Agg backend, imported only when a script draws."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, paths: Sequence[Path], dpi: int = 110) -> list[Path]:
    """Write the figure to each path (format from the suffix), atomically, then close it."""
    plt = pyplot()
    try:
        for path in paths:
            with atomic_output(path) as tmp:
                fig.savefig(tmp, dpi=dpi, format=Path(path).suffix.lstrip(".") or "png")
    finally:
        plt.close(fig)
    return list(paths)
