"""Continuous compliance: re-evaluating running workloads, and what-if for candidate policies.

``evaluation.py`` is the pure part both share: which running workloads a policy set would
deny, and what a candidate set changes for each tenant. Other features ask for an
evaluation through ``core.outbox``, in the transaction of their change, without importing
this package; ``service.py`` claims those requests, loads the facts, runs the evaluation
and records it; ``tasks.py`` runs it on Celery beat; ``metrics.py`` exports its gauges.
"""
