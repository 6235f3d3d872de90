-- depends: 0014_reservations_outlive_inventory
-- An admin's approval for one bootstrap-token registration of a node already known.
--
-- A machine id is no secret (every inventory reader sees it), so registering a known one
-- must prove it is that node: with the node's own agent credential, with an admin token,
-- or with a bootstrap token once an admin approved a replacement here (a node whose disk
-- was wiped has lost its credential). One approval per node at most: approving again
-- replaces it. The registration that uses it deletes it in its own transaction, so it is
-- used once; an expired one is never used and is replaced by the next approval. Both the
-- approval and its use are audited (node.replacement_approved, node.replacement_used),
-- which is where their history lives.

CREATE TABLE node_replacement_approval (
    node_id     uuid PRIMARY KEY
                CONSTRAINT node_replacement_approval_node_fkey REFERENCES node (id)
                ON DELETE CASCADE,
    approved_by text NOT NULL,
    approved_at timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    reason      text,
    CONSTRAINT node_replacement_approval_expires_after_approval CHECK (expires_at > approved_at)
);

-- UPDATE for approving again (an upsert); DELETE for using an approval up.
GRANT SELECT, INSERT, UPDATE, DELETE ON node_replacement_approval TO sovereign_app;
