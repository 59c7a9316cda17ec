"""Locate the data shipped with nodetune: profiles/, checks/ and playbooks/.

In a wheel they live in `nodetune/_data/` (hatch force-include); in a source checkout or an
editable install they are the top-level folders beside the package.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def data_dir(name: str) -> Path:
    """Path of the shipped folder `name` ("profiles", "checks" or "playbooks")."""
    packaged = Path(str(resources.files("nodetune"))) / "_data" / name
    if packaged.is_dir():
        return packaged
    return Path(str(resources.files("nodetune"))).parent / name
