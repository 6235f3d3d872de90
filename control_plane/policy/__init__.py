"""Residency policy: versioned policy documents and the pure engine that applies them.

``models.py`` holds the vocabulary, the policy documents and the engine's inputs and
outputs; ``documents.py`` loads, validates and compiles documents into a ``PolicySet``;
``engine/`` decides, without I/O, whether a workload may run and on which nodes. The
policy store (``store_models.py``, ``repository.py``, ``service.py``, ``api.py``) keeps the
numbered versions of each policy and the policy sets activated from them.
"""
