"""The fleet view: collect reports from many nodes through Ansible, then compare them.

`collect` runs `nodetune facts/audit/bench --json` on every inventory host and writes one
`nodetune.fleet-report/1` document per host; `report` reads a directory of those (and of the
agent's `/report` documents) and computes compliance per setting, the worst nodes,
configuration drift and benchmark outliers.
"""
