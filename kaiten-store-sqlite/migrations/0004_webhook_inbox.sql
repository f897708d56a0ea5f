-- kaiten-sync schema for SQLite, version 4: the webhook inbox.
--
-- One row per entity a webhook delivery said changed (`kind` is the entity kind's name, `cards`,
-- `boards`, ...); repeated deliveries for one entity coalesce into its row (`seq` and `deliveries`
-- count them). Workers claim due rows (`next_attempt_at` passed, not failed, no live claim) for a
-- lease (`claimed_by`, `claimed_until`), fetch the entity from Kaiten, then delete the row if no
-- delivery arrived meanwhile (`seq` unchanged) or release it. See `kaiten_sync::inbox`.
--
-- Times are RFC 3339 UTC text like everywhere in this schema, but always with nine fraction digits
-- (`2025-01-01T00:00:05.000000000Z`): fixed width, so that text order is exactly time order for the
-- comparisons the claim makes (`next_attempt_at <= now`).
--
-- AUTOINCREMENT: an id is never reused, so a worker finishing a row whose lease it lost can never
-- delete a newer row that happened to get the same id.
CREATE TABLE webhook_inbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    kind            TEXT NOT NULL,
    entity_id       INTEGER NOT NULL,
    parent_id       INTEGER,
    event           TEXT NOT NULL,
    deliveries      INTEGER NOT NULL DEFAULT 1,
    seq             INTEGER NOT NULL DEFAULT 1,
    received_at     TEXT NOT NULL,
    next_attempt_at TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    failed_at       TEXT,
    claimed_by      TEXT,
    claimed_until   TEXT,
    UNIQUE (kind, entity_id)
);
-- The claim: due rows that did not give up, oldest due first.
CREATE INDEX webhook_inbox_due ON webhook_inbox (next_attempt_at, id) WHERE failed_at IS NULL;
