"""`nodetune tune SUITES`: prove a tuning change with benchmarks, and undo it if it hurts.

audit -> baseline benchmarks -> apply -> the same benchmarks again -> decide per metric with
`bench --compare`'s noise model -> roll back on a regression beyond noise (unless --keep).
"""

from typing import Final

TUNE_SCHEMA: Final = "nodetune.tune/1"
CARD_SCHEMA: Final = "nodetune.tune-card/1"
