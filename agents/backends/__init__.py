"""GPU backends: NVML, ``nvidia-smi -q -x`` and recorded readings, behind one interface."""
