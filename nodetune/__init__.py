"""nodetune: find, fix and prove the tuning of GPU servers."""

__version__ = "0.1.0"
