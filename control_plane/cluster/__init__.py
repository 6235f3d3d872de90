"""Cluster: keeping the Kubernetes Nodes' ``sovereign.io/*`` labels true to the inventory.

``service.py`` is the label sync (a plain function over a database connection and an API
client), ``tasks.py`` its thin Celery wrapper, ``models.py`` the label scheme and what a
sync reports.
"""
