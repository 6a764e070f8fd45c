"""spendmeter's Kubernetes operator: injects the metering sidecar into opted-in pods and serves the CRDs.

The pod mutation (`mutation`), its per-pod options (`options`), the workload identity (`workloads`), the
webhook registration (`webhooks`) and the price configuration (`prices`) are pure; `handlers` and `serving`
hold the kopf handlers and servers that do the I/O; `cli` is the ``spendmeter operator`` subcommand.
"""
