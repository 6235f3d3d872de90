"""Shared plumbing used by every feature: settings, database, errors, HTTP, metrics.

Also the two mechanisms every mutation uses: ``audit_log`` (the one audited-change
helper and the hash chain's format) and ``outbox`` (asking for a compliance evaluation
in the transaction of a change). It imports no feature: ``make lint`` checks that.
"""
