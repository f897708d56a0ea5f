-- kaiten-sync schema, version 4: the webhook inbox.
--
-- One row per entity a webhook delivery said changed (`kind` is the entity kind's name, `cards`,
-- `boards`, ...); repeated deliveries for one entity coalesce into its row (`seq` and `deliveries`
-- count them). Workers claim due rows (`next_attempt_at` passed, not failed, no live claim) with
-- `FOR UPDATE SKIP LOCKED`, so several `serve` processes share the inbox and never hold one row at
-- once; they fetch the entity from Kaiten, then delete the row if no delivery arrived meanwhile
-- (`seq` unchanged) or release it. See `kaiten_sync::inbox`.
--
-- An identity never reuses an id, so a worker finishing a row whose lease it lost can never delete
-- a newer row. Rows are updated often (every delivery, claim and release) and never grow: the
-- fill factor leaves room for those updates to stay on the row's page (HOT), sparing the indexes.
CREATE TABLE {schema}.webhook_inbox (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind            text NOT NULL,
    entity_id       bigint NOT NULL,
    parent_id       bigint,
    event           text NOT NULL,
    deliveries      bigint NOT NULL DEFAULT 1,
    seq             bigint NOT NULL DEFAULT 1,
    received_at     timestamptz NOT NULL,
    next_attempt_at timestamptz NOT NULL,
    attempts        bigint NOT NULL DEFAULT 0,
    last_error      text,
    failed_at       timestamptz,
    claimed_by      text,
    claimed_until   timestamptz,
    UNIQUE (kind, entity_id)
) WITH (fillfactor = 80);
-- The claim: due rows that did not give up, oldest due first.
CREATE INDEX webhook_inbox_due_idx ON {schema}.webhook_inbox (next_attempt_at, id) WHERE failed_at IS NULL;
