"""Provenance: checking a hardware bill of materials against what the node agents read."""
