"""Sovereign control plane: inventory, residency, policy and audit evidence for on-prem GPUs."""

__version__ = "0.1.0"
