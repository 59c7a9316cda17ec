"""`nodetune agent`: audits and checks the node on a schedule, serves the results as Prometheus
metrics and JSON, and publishes them as Kubernetes node labels (and, if asked, a taint)."""
