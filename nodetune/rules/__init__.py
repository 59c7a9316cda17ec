"""The rule engine: operators, fact-path resolution and evaluation of settings and checks into
findings."""
