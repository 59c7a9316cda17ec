"""What one `nodetune check` is asked: the fields of its options table, as a frozen dataclass.

    request = CheckRequest(tier="quick", expect_gpus=8, profiles_dirs=("/etc/nodetune",))

The defaults are the options table's (`nodetune.check.options.OPTIONS`).
"""

from __future__ import annotations

from typing import Any

from nodetune.check.options import DEFAULTS, REQUEST_FIELDS
from nodetune.facts.record import record


@record(frozen=True)
class CheckRequest:
    """`profile`: None uses no profile, "auto" the one the node matches, else a profile name."""

    root: str | None = DEFAULTS["root"]
    snapshot: str | None = DEFAULTS["snapshot"]
    nvml: str = DEFAULTS["nvml"]
    tier: str = DEFAULTS["tier"]
    timeout: float | None = DEFAULTS["timeout"]
    max_age: float | None = DEFAULTS["max_age"]
    profile: str | None = DEFAULTS["profile"]
    profiles_dirs: tuple[str, ...] = DEFAULTS["profiles_dirs"]
    overrides: str | None = DEFAULTS["overrides"]
    expect_gpus: int | None = DEFAULTS["expect_gpus"]
    expect_model: str | None = DEFAULTS["expect_model"]
    mounts: tuple[str, ...] = DEFAULTS["mounts"]
    modules: tuple[str, ...] = DEFAULTS["modules"]
    expect_idle: bool = DEFAULTS["expect_idle"]
    write_probe: bool = DEFAULTS["write_probe"]
    cache_file: str | None = DEFAULTS["cache_file"]

    def fields(self) -> dict[str, Any]:
        """The fields by name, as `nodetune.check.options.parse` gives them."""
        return {name: getattr(self, name) for name in REQUEST_FIELDS}
