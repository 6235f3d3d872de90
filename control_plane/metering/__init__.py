"""Metering: GPU-hours and MIG-slice-hours used and available, rolled up incrementally."""
