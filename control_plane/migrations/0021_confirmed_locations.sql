-- depends: 0020_violation_actions
-- Where a node stands is confirmed by a person or by a credential scoped to the place, never
-- taken from the agent's own word.
--
-- A bootstrap token may be scoped to a zone, and within it to a site: a registration with it
-- that claims another zone or site is refused, and one that claims none takes the token's.
-- A node registered so, or by an admin, has its location confirmed. One registered with an
-- unscoped bootstrap token waits `planned`, never eligible, until an admin sets its zone.
-- The confirmation is kept on the node (when, by whom, how), and a CHECK makes "active
-- without a confirmed location" impossible whatever path writes the row.
--
-- Nodes registered before this migration were placed by their agents' config alone; they
-- are marked confirmed `upgrade` (so a running fleet is not taken out of service), which
-- is how an auditor finds them: `GET /v1/nodes` shows `location.via`.
--
-- A scope names zones and sites by foreign key. Deleting the zone or site drops that part
-- of the scope (SET NULL): a token that loses its zone is unscoped, so its registrations
-- wait for an admin, which fails safe.

ALTER TABLE api_token
    ADD COLUMN zone_slug text CONSTRAINT api_token_zone_fkey
                        REFERENCES residency_zone (slug) ON DELETE SET NULL,
    ADD COLUMN site_slug text CONSTRAINT api_token_site_fkey
                        REFERENCES site (slug) ON DELETE SET NULL,
    ADD CONSTRAINT api_token_scope_only_bootstrap
        CHECK ((zone_slug IS NULL AND site_slug IS NULL) OR role = 'bootstrap');

ALTER TABLE node
    ADD COLUMN location_confirmed_at  timestamptz,
    ADD COLUMN location_confirmed_by  text,
    ADD COLUMN location_confirmed_via text CONSTRAINT node_location_confirmed_via_valid
                                      CHECK (location_confirmed_via IN
                                             ('admin', 'scoped-token', 'upgrade'));

UPDATE node SET location_confirmed_at = registered_at,
                location_confirmed_by = 'migration 0021',
                location_confirmed_via = 'upgrade';

ALTER TABLE node
    ADD CONSTRAINT node_location_confirmation_complete
        CHECK ((location_confirmed_at IS NULL) = (location_confirmed_by IS NULL)
               AND (location_confirmed_at IS NULL) = (location_confirmed_via IS NULL)),
    ADD CONSTRAINT node_active_needs_confirmed_location
        CHECK (status <> 'active' OR location_confirmed_at IS NOT NULL);
