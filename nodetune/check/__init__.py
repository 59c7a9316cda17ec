"""`nodetune check`: health-check suites, their evaluation, cache and start-up fast path."""
