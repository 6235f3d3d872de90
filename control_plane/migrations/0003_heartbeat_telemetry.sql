-- depends: 0002_identity_drift
-- Telemetry the agent reads beyond the basics, and how many heartbeats each node sent
-- (with sequence numbers, proof that a replayed spool arrived once and in order).

ALTER TABLE gpu
    ADD COLUMN ecc_uncorrected_errors bigint,
    ADD COLUMN process_count integer,
    ADD COLUMN fan_speed_pct real;

ALTER TABLE node
    ADD COLUMN heartbeats_received bigint NOT NULL DEFAULT 0;
