"""Kubernetes admission webhooks: GPU pods decided by the same engine, on the same facts."""
