"""Hardware profiles: load, extend, validate and match them to a node."""
