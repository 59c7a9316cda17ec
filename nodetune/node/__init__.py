"""The host a command reads: its root (live, a directory or a snapshot in memory), NVML and
snapshots; and the child processes nodetune starts on it, which never outlive it."""
