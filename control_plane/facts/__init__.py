"""Decision facts: what the policy engine is given, loaded one way for every caller.

Admission (``POST /v1/workloads``), continuous compliance, what-if and, later, the
Kubernetes admission webhook all decide with the same engine; this package is where they
all get its inputs. ``workloads.py`` turns a workload request into the engine's
``WorkloadView`` with what the request names read from the registry; ``fleet.py`` reads
the fleet and the zone tree into a ``NodeIndex``; ``kubernetes.py`` says which inventory
node a Kubernetes Node is, for the label sync and the pod sweep alike. A caller that
loads facts anywhere else would judge something else than the others, so none does.
"""
