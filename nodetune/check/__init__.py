"""`nodetune check`: is this node fit to run a job now?

options    every option, once: the click command and the start-up fast path are built from it
request    CheckRequest, the options' fields
operation  run(request, facts=None): the one entry for the CLI, the Slurm scripts and the agent
fastpath   `nodetune check` without click: parse, reuse a stored answer, run, print
suite      checks/<tier>.yaml, loaded, validated and cached as JSON
evaluate   gather what the checks read (with timeouts), evaluate them, the Report
bench      the standard tier's quick benchmarks and the health.bench facts
cache      where results and parsed suites are kept, and their keys
fromagent  the agent's last answer in a file: written each cycle, read by --from-agent

Nothing is imported here: `nodetune check --max-age` loads only options, cache and fastpath;
`--from-agent` only options, fromagent and fastpath.
"""
