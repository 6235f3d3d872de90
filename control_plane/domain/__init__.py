"""Domain vocabulary every layer reads: enumerations and validated field types.

The enumerations are stored on nodes, assets, decisions and events; the field types
validate the API's request bodies.

It sits at the ground floor with ``core``: it imports no feature and no plumbing with
I/O, so the policy engine, the features, the entry points and the tests all use the same
words without importing one another's API models.
"""
