-- name: insert_request
-- A pending compliance request (migration 0008): the compliance evaluation claims it.
INSERT INTO compliance_request (reason, subject)
VALUES (%(reason)s, %(subject)s)
RETURNING id, reason, subject, requested_at;
