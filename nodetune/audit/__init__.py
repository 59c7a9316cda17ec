"""`nodetune audit`: facts + profile -> findings, summary and exit code."""
