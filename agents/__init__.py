"""Sovereign node agent: reads GPUs and host identity and reports them to the control plane."""

__version__ = "0.1.0"
