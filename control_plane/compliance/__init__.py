"""Continuous compliance: re-evaluating running workloads, and what-if for candidate policies.

``evaluation.py`` is the pure part both share: which running workloads a policy set would
deny, and what a candidate set changes for each tenant. ``outbox.py`` is how other
features ask for an evaluation, in the transaction of their change; ``service.py`` loads
the facts, runs the evaluation and records it; ``tasks.py`` runs it on Celery beat.
"""
