-- depends: 0027_metering
-- Evidence reports (docs/reports.md): the jobs that build them and the signed files.
--
-- A job is one report of one kind, period, format and covered audit checkpoint. The
-- unique key on those five makes a second request for the same report return the stored
-- one (NULLS NOT DISTINCT: "no checkpoint yet" is one value too). The Celery task claims a
-- job by moving it to `running` and counting an attempt; a worker killed mid-report
-- leaves it `running`: the broker redelivers the task (acks late) when it can tell, and
-- beat's dispatcher sends it again once its builder has been silent for the lease; the
-- next attempt starts over, deleting the chunks the dead one had written. A session
-- advisory lock per job (held by the builder's connection, so it goes with a dead worker)
-- keeps two deliveries from building one job at once.
--
-- The file is kept in `report_chunk` rows of at most 1 MiB, written as the renderer
-- produces them and read back one at a time for a download, so neither the worker nor the
-- API holds a whole report in memory. `sha256` and `signature` (Ed25519 over the file's
-- bytes, base64) are set with `done`.

CREATE TABLE report_job (
    id            uuid CONSTRAINT report_job_pkey PRIMARY KEY,
    kind          text NOT NULL
                  CONSTRAINT report_job_kind_check CHECK (kind IN ('sovereignty', 'compliance')),
    period_from   timestamptz NOT NULL,
    period_to     timestamptz NOT NULL,
    format        text NOT NULL
                  CONSTRAINT report_job_format_check CHECK (format IN ('json', 'csv', 'pdf')),
    -- The audit checkpoint the report covers (its number), null when none existed yet.
    checkpoint    bigint,
    status        text NOT NULL DEFAULT 'queued'
                  CONSTRAINT report_job_status_check
                  CHECK (status IN ('queued', 'running', 'done', 'failed')),
    percent       smallint NOT NULL DEFAULT 0
                  CONSTRAINT report_job_percent_range CHECK (percent BETWEEN 0 AND 100),
    step          text NOT NULL DEFAULT 'queued',
    attempts      integer NOT NULL DEFAULT 0,
    error         text,
    size_bytes    bigint,
    sha256        char(64),
    content_sha256 char(64),
    signature     text,
    key_fingerprint char(64),
    requested_by  text NOT NULL,
    requested_at  timestamptz NOT NULL DEFAULT now(),
    started_at    timestamptz,
    -- When the builder last said it is alive (each progress step), and when the
    -- dispatcher last sent the job to the queue: a running job whose builder has been
    -- silent for the lease is sent again (its worker died), at most once per lease.
    heartbeat_at  timestamptz,
    dispatched_at timestamptz,
    finished_at   timestamptz,
    CONSTRAINT report_job_period CHECK (period_to > period_from),
    CONSTRAINT report_job_once UNIQUE NULLS NOT DISTINCT
        (kind, period_from, period_to, format, checkpoint)
);

CREATE INDEX report_job_requested_idx ON report_job (requested_at DESC, id);
CREATE INDEX report_job_unfinished_idx ON report_job (status) WHERE status IN ('queued', 'running');

CREATE TABLE report_chunk (
    job_id  uuid NOT NULL CONSTRAINT report_chunk_job_fkey
            REFERENCES report_job (id) ON DELETE CASCADE,
    seq     integer NOT NULL,
    data    bytea NOT NULL,
    CONSTRAINT report_chunk_pkey PRIMARY KEY (job_id, seq)
);

GRANT SELECT, INSERT, UPDATE ON report_job TO sovereign_app;
GRANT SELECT, INSERT, DELETE ON report_chunk TO sovereign_app;

-- A report reads one period of decisions: without these, a period is a full scan.
CREATE INDEX workload_created_idx ON workload (created_at);
CREATE INDEX pod_decision_created_idx ON pod_decision (created_at);
