"""Versioned schema names of every JSON document nodetune writes.

Bump the number after the slash when a documented path changes meaning or disappears;
adding keys does not bump it.
"""

from typing import Final

FACTS_SCHEMA: Final = "nodetune.facts/1"
COLLECTORS_SCHEMA: Final = "nodetune.collectors/1"
TOPO_SCHEMA: Final = "nodetune.topo/1"
NVML_SCHEMA: Final = "nodetune.nvml/1"
SNAPSHOT_SCHEMA: Final = "nodetune.snapshot/1"
AUDIT_SCHEMA: Final = "nodetune.audit/1"
PROFILE_SCHEMA: Final = "nodetune.profile/1"
APPLY_SCHEMA: Final = "nodetune.apply/1"
ROLLBACK_SCHEMA: Final = "nodetune.rollback/1"
STATE_SCHEMA: Final = "nodetune.state/1"
MANIFESTS_SCHEMA: Final = "nodetune.manifests/1"
BIND_SCHEMA: Final = "nodetune.bind/1"
BENCH_SCHEMA: Final = "nodetune.bench/1"
CHECK_SCHEMA: Final = "nodetune.check/1"
AGENT_REPORT_SCHEMA: Final = "nodetune.agent-report/1"
AGENT_CHECK_SCHEMA: Final = "nodetune.agent-check/1"
FLEET_SCHEMA: Final = "nodetune.fleet/1"
FLEET_REPORT_SCHEMA: Final = "nodetune.fleet-report/1"
FLEET_COLLECT_SCHEMA: Final = "nodetune.fleet-collect/1"
FLEET_TOPOLOGY_SCHEMA: Final = "nodetune.fleet-topology/1"
IMPORT_SCHEMA: Final = "nodetune.import/1"
EXPLAIN_SCHEMA: Final = "nodetune.explain/1"
ERROR_SCHEMA: Final = "nodetune.error/1"
