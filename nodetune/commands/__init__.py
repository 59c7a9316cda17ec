"""One thin module per CLI command: parse the options, call the operation, hand the result to a
view. nodetune.cli loads a command's module only when that command runs."""
