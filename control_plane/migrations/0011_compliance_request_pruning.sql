-- depends: 0010_audit_chained_at_commit
-- Handled compliance requests are pruned. Until now a request was marked handled and
-- kept forever, so the outbox grew with every change that asked for an evaluation. The
-- evaluation that handles a request keeps what the evidence needs (`triggers`, the first
-- requests with their reason and subject, and the exact `trigger_count`), so the row
-- itself is only worth keeping for a while, for `GET /v1/compliance/requests/{id}`. The
-- compliance evaluation now deletes, in its own transaction, the requests handled more
-- than SOVEREIGN_COMPLIANCE_REQUEST_RETENTION_DAYS ago; the application role needs
-- DELETE for that. Evaluations stay append-only.

GRANT DELETE ON compliance_request TO sovereign_app;
