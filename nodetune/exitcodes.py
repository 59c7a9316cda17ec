"""The one exit-code table every nodetune command follows.

| code | audit                | check      | apply / rollback             | other commands |
|------|----------------------|------------|------------------------------|----------------|
| 0    | compliant            | healthy    | done (or nothing to do)      | success        |
| 1    | warnings only        | unhealthy  | some settings failed         | -              |
| 2    | critical findings    | (unused)   | changes (--detailed-exitcode) | -             |
| 3    | nodetune could not run: usage error, bad profile, bad snapshot or --root, no Ansible ... |
| 4    | -                    | -          | refused: nothing was changed | -              |
"""

from typing import Final

OK: Final = 0
WARNINGS: Final = 1
UNHEALTHY: Final = 1
FAILED: Final = 1
CRITICAL: Final = 2
CHANGES: Final = 2  # apply --detailed-exitcode: changes pending or made
ERROR: Final = 3
REFUSED: Final = 4
