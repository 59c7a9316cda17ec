"""What a profile name may be: a file stem in a profile directory, never a path.

Kept apart from the catalog so that `nodetune check`'s start-up path can validate `--profile`
without importing the profile machinery.
"""

from __future__ import annotations

import re

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
NAME_RULE = ("a profile name is letters, digits, '.', '_' and '-' (not a path); "
             "put your own profiles in a directory and pass --profiles-dir DIR")


def is_profile_name(text: str) -> bool:
    """True for `h200`, `site-h100.v2`; False for '', '/abs/path', '../x' and 'a/b'."""
    return NAME_RE.fullmatch(text) is not None and ".." not in text
