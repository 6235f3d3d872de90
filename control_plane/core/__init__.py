"""Shared plumbing used by every feature: settings, database, errors, security, metrics."""
