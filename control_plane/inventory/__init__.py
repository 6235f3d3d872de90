"""Inventory: residency zones, sites, GPU servers (nodes), their GPUs and provenance."""
