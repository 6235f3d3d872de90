"""Registry: what AI workloads touch (tenants and quotas, datasets, models, destinations)."""
