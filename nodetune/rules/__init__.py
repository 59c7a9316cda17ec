"""The rule engine: evaluate profile settings and health checks against facts -> Findings.

One engine serves `nodetune audit` (profile settings: how a node should be configured) and
`nodetune check` (health checks: the node is not broken). Both are `Rule`s; both yield the same
`nodetune.facts.model.Finding`.

A rule, as written in YAML (profiles/*.yaml, checks/*.yaml) or built with `rule.Rule.from_dict`:

    id: memory.numa_balancing          # stable id (profiles: "<section>.<key>")
    area: numa-memory                  # cpu numa-memory gpu pcie-topology nic-rdma storage kernel
    fact: numa.balancing               # fact path (see below)
    equals: 0                          # one or more operators, all must hold
    when:                              # optional: the rule applies only if these hold
      - {fact: derived.numa.node_count, min: 2, reason: "one NUMA node: nothing to balance"}
    or:                                # optional: the rule also passes if any of these holds
      - {fact: services.units.nvidia-persistenced.state, equals: running}
    severity: warning                  # critical | warning | info
    why: "[T1] page migration stalls GPU feeders"   # impact, citing its source
    fix: "sysctl -w kernel.numa_balancing=0"
    remediation: {role: kernel, task: sysctl, vars: {kernel_sysctl: {kernel.numa_balancing: "0"}}}
    disruption: none                   # none | service-restart | reboot | kubelet-state-reset
    persisted: kernel.persisted.sysctl.kernel.numa_balancing.value   # three-state settings
    message: "..."                     # optional one-line template for failures

Fact paths (`nodetune.facts.paths`): dotted paths into the facts document plus `derived.*`
(`nodetune.facts.derived.derive`, added automatically when a rule needs it). `gpus[*].x`
evaluates per item, each item a subject named from the item: GPU3, NUMA1, mlx5_0,
mlx5_0/port1, nvme0n1, eth0, a PCI address. `[kind=nic|infiniband,vendor=0x15b3]` selects
items; `[0]` one item. Keys containing dots resolve by longest match:
`kernel.sysctl.vm.swappiness`.

Operators: `equals`, `min`, `max`, `one_of`, `not_one_of`, `regex` (re.search), `present`,
`absent` (true/false), `contains`, `not_contains` (a value or a list: all of / none of).
Numbers compare numerically also when the fact is a string ("0" equals 0); booleans accept
"1/0/yes/no/on/off/true/false". An operand may be:
- a literal; `${var}` (a variable; a whole-string reference keeps the variable's type);
- `{fact: PATH}`: another fact, taken from the same item when PATH shares the rule's `[*]`;
- `{per_subject: {GPU0: 0, GPU4: 1, ...}}`: a documented value per subject (a subject not
  listed is skipped).
`fix`, `message` and remediation vars may also use `${subject}`, `${actual}` and `${fact:PATH}`.

Conditions (`when`, `or`, `persisted` in mapping form) use the same operators on other facts. A
condition path whose `[*]` matches the rule's binds to the same item; otherwise it holds when any
item satisfies it.

Outcomes (`nodetune.facts.model.Status`): PASS; FAIL; UNKNOWN when the fact (or a condition's fact)
is null or missing, with the reason the collector recorded in its section's `unknown` map (or why
the collector failed); SKIPPED when a `when` condition is false or the rule has no subjects on this
node (no GPUs), with the reason.

Three states: when `persisted` names where the setting is persisted (sysctl.d, modprobe.d, the
boot command line), the Finding carries the persisted value; a failure whose fix is already
persisted but needs a reboot to take effect has `needs_reboot`.

Modules, each with one job:

    rule.py        Rule and Condition, the typed form of a setting or check (`Rule.from_dict`)
    schema.py      schema checks of rule mappings (`rule_problems`, `condition_problems`)
    resolve.py     fact-path resolution (`resolve(doc, path) -> [Item]`, subjects, reasons)
    operators.py   comparisons and their wording (`check`, `satisfied`, `describe`, `target`)
    templating.py  `${...}` references and operands (`substitute`, `expectation`)
    evaluation.py  rules against facts (`evaluate(rules, facts, variables)`, `conditions_hold`)
    findings.py    one evaluated rule on one subject -> `Finding`

The profile language built on it (settings, tunables, extends, overrides) is described in
docs/profiles.md.
"""
