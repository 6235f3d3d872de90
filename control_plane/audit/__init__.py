"""Audit: the hash-chained, append-only log of every decision and change."""
