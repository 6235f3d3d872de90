"""Inventory: residency zones, sites, GPU servers (nodes), their GPUs and provenance.

One module per aggregate: ``zones.py`` (zones and sites), ``nodes.py`` (listing, showing
and an admin's changes), ``drift.py`` (hardware identity drift and its acknowledgement),
``agents.py`` (the control plane's side of the agent protocol: registration, heartbeats,
the offline sweep), with ``identity.py`` the pure identity comparison they share.
"""
