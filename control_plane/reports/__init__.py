"""Evidence reports: the sovereignty and compliance reports, built by the worker, signed.

See docs/reports.md for what each number means and how to verify a report.
"""
