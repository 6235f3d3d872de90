"""Scheduling: workload admission, GPU placement and reservations with leases."""
