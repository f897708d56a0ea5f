-- kaiten-sync schema, version 1.
--
-- `{schema}` is replaced by the configured schema name (quoted) before this file runs. The whole
-- file runs in one transaction, under a transaction-scoped advisory lock, and is recorded in
-- `{schema}.schema_migrations`. Never edit a released migration: add a new file instead.
--
-- Entity tables mirror `kaiten_sync::schema::TABLES`: `id`, the typed columns in order, then
-- `raw` (the JSON as Kaiten sent it), `synced_at`, `deleted_at`, `seen_sweep` (the full listing
-- that last saw the row) and `raw_hash` (64 bits of SHA-256 of `raw` as serialized by the store:
-- an unchanged record is recognised without parsing its JSON).
-- Relationships (card -> board/column/lane, board -> space, column/lane -> board, subcolumn ->
-- column, card_tags -> card) are foreign keys added by `migrate()` after the versioned migrations
-- when `PgStoreOptions::foreign_keys` is on (the default); see `migrate::FOREIGN_KEYS`.

CREATE TABLE {schema}.spaces (
    id                bigint PRIMARY KEY,
    uid               text,
    title             text,
    archived          boolean,
    parent_entity_uid text,
    sort_order        double precision,
    external_id       text,
    created           timestamptz,
    updated           timestamptz,
    raw               jsonb NOT NULL,
    synced_at         timestamptz NOT NULL,
    deleted_at        timestamptz,
    seen_sweep        bigint,
    raw_hash          bigint
);

CREATE TABLE {schema}.users (
    id          bigint PRIMARY KEY,
    uid         text,
    full_name   text,
    username    text,
    email       text,
    activated   boolean,
    is_virtual  boolean,
    created     timestamptz,
    updated     timestamptz,
    raw         jsonb NOT NULL,
    synced_at   timestamptz NOT NULL,
    deleted_at  timestamptz,
    seen_sweep  bigint,
    raw_hash          bigint
);

CREATE TABLE {schema}.card_types (
    id          bigint PRIMARY KEY,
    uid         text,
    name        text,
    letter      text,
    color       bigint,
    archived    boolean,
    created     timestamptz,
    updated     timestamptz,
    raw         jsonb NOT NULL,
    synced_at   timestamptz NOT NULL,
    deleted_at  timestamptz,
    seen_sweep  bigint,
    raw_hash          bigint
);

CREATE TABLE {schema}.tags (
    id          bigint PRIMARY KEY,
    uid         text,
    name        text,
    color       bigint,
    archived    boolean,
    created     timestamptz,
    updated     timestamptz,
    raw         jsonb NOT NULL,
    synced_at   timestamptz NOT NULL,
    deleted_at  timestamptz,
    seen_sweep  bigint,
    raw_hash          bigint
);

CREATE TABLE {schema}.property_definitions (
    id           bigint PRIMARY KEY,
    uid          text,
    name         text,
    "type"       text,
    condition    bigint,
    multi_select boolean,
    external_id  text,
    created      timestamptz,
    updated      timestamptz,
    raw          jsonb NOT NULL,
    synced_at    timestamptz NOT NULL,
    deleted_at   timestamptz,
    seen_sweep   bigint,
    raw_hash          bigint
);

CREATE TABLE {schema}.property_select_values (
    id                 bigint PRIMARY KEY,
    uid                text,
    custom_property_id bigint,
    value              text,
    color              bigint,
    condition          bigint,
    sort_order         double precision,
    created            timestamptz,
    updated            timestamptz,
    raw                jsonb NOT NULL,
    synced_at          timestamptz NOT NULL,
    deleted_at         timestamptz,
    seen_sweep         bigint,
    raw_hash          bigint
);

CREATE TABLE {schema}.boards (
    id          bigint PRIMARY KEY,
    uid         text,
    space_id    bigint,
    title       text,
    description text,
    external_id text,
    sort_order  double precision,
    archived    boolean,
    created     timestamptz,
    updated     timestamptz,
    raw         jsonb NOT NULL,
    synced_at   timestamptz NOT NULL,
    deleted_at  timestamptz,
    seen_sweep  bigint,
    raw_hash          bigint
);

CREATE TABLE {schema}.columns (
    id               bigint PRIMARY KEY,
    uid              text,
    board_id         bigint,
    parent_column_id bigint,
    title            text,
    sort_order       double precision,
    "type"           bigint,
    wip_limit        bigint,
    external_id      text,
    created          timestamptz,
    updated          timestamptz,
    raw              jsonb NOT NULL,
    synced_at        timestamptz NOT NULL,
    deleted_at       timestamptz,
    seen_sweep       bigint,
    raw_hash          bigint
);

CREATE TABLE {schema}.lanes (
    id          bigint PRIMARY KEY,
    uid         text,
    board_id    bigint,
    title       text,
    sort_order  double precision,
    condition   bigint,
    wip_limit   bigint,
    external_id text,
    created     timestamptz,
    updated     timestamptz,
    raw         jsonb NOT NULL,
    synced_at   timestamptz NOT NULL,
    deleted_at  timestamptz,
    seen_sweep  bigint,
    raw_hash          bigint
);

CREATE TABLE {schema}.cards (
    id            bigint PRIMARY KEY,
    uid           text,
    title         text,
    description   text,
    state         bigint,
    condition     bigint,
    archived      boolean,
    asap          boolean,
    blocked       boolean,
    space_id      bigint,
    board_id      bigint,
    column_id     bigint,
    lane_id       bigint,
    owner_id      bigint,
    type_id       bigint,
    sort_order    double precision,
    version       bigint,
    size          double precision,
    due_date      timestamptz,
    external_id   text,
    properties    jsonb,
    created       timestamptz,
    updated       timestamptz,
    last_moved_at timestamptz,
    completed_at  timestamptz,
    raw           jsonb NOT NULL,
    synced_at     timestamptz NOT NULL,
    deleted_at    timestamptz,
    seen_sweep    bigint,
    raw_hash          bigint
);

-- What people query: parents, owner, type, recency, and live rows.
CREATE INDEX spaces_updated_idx ON {schema}.spaces (updated);
CREATE INDEX spaces_synced_at_idx ON {schema}.spaces (synced_at);
CREATE INDEX spaces_live_idx ON {schema}.spaces (id) WHERE deleted_at IS NULL;

CREATE INDEX users_updated_idx ON {schema}.users (updated);
CREATE INDEX users_synced_at_idx ON {schema}.users (synced_at);
CREATE INDEX users_live_idx ON {schema}.users (id) WHERE deleted_at IS NULL;

CREATE INDEX card_types_updated_idx ON {schema}.card_types (updated);
CREATE INDEX card_types_synced_at_idx ON {schema}.card_types (synced_at);
CREATE INDEX card_types_live_idx ON {schema}.card_types (id) WHERE deleted_at IS NULL;

CREATE INDEX tags_updated_idx ON {schema}.tags (updated);
CREATE INDEX tags_synced_at_idx ON {schema}.tags (synced_at);
CREATE INDEX tags_live_idx ON {schema}.tags (id) WHERE deleted_at IS NULL;

CREATE INDEX property_definitions_updated_idx ON {schema}.property_definitions (updated);
CREATE INDEX property_definitions_synced_at_idx ON {schema}.property_definitions (synced_at);
CREATE INDEX property_definitions_live_idx ON {schema}.property_definitions (id) WHERE deleted_at IS NULL;

CREATE INDEX property_select_values_property_idx ON {schema}.property_select_values (custom_property_id);
CREATE INDEX property_select_values_updated_idx ON {schema}.property_select_values (updated);
CREATE INDEX property_select_values_synced_at_idx ON {schema}.property_select_values (synced_at);
CREATE INDEX property_select_values_live_idx ON {schema}.property_select_values (id) WHERE deleted_at IS NULL;

CREATE INDEX boards_space_idx ON {schema}.boards (space_id);
CREATE INDEX boards_updated_idx ON {schema}.boards (updated);
CREATE INDEX boards_synced_at_idx ON {schema}.boards (synced_at);
CREATE INDEX boards_live_idx ON {schema}.boards (id) WHERE deleted_at IS NULL;

CREATE INDEX columns_board_idx ON {schema}.columns (board_id);
CREATE INDEX columns_parent_idx ON {schema}.columns (parent_column_id);
CREATE INDEX columns_updated_idx ON {schema}.columns (updated);
CREATE INDEX columns_synced_at_idx ON {schema}.columns (synced_at);
CREATE INDEX columns_live_idx ON {schema}.columns (id) WHERE deleted_at IS NULL;

CREATE INDEX lanes_board_idx ON {schema}.lanes (board_id);
CREATE INDEX lanes_updated_idx ON {schema}.lanes (updated);
CREATE INDEX lanes_synced_at_idx ON {schema}.lanes (synced_at);
CREATE INDEX lanes_live_idx ON {schema}.lanes (id) WHERE deleted_at IS NULL;

CREATE INDEX cards_board_idx ON {schema}.cards (board_id);
CREATE INDEX cards_column_idx ON {schema}.cards (column_id);
CREATE INDEX cards_lane_idx ON {schema}.cards (lane_id);
CREATE INDEX cards_space_idx ON {schema}.cards (space_id);
CREATE INDEX cards_owner_idx ON {schema}.cards (owner_id);
CREATE INDEX cards_type_idx ON {schema}.cards (type_id);
CREATE INDEX cards_updated_idx ON {schema}.cards (updated);
CREATE INDEX cards_synced_at_idx ON {schema}.cards (synced_at);
CREATE INDEX cards_live_idx ON {schema}.cards (id) WHERE deleted_at IS NULL;

-- Tag links of cards: replaced with the card row whenever the card is written.
CREATE TABLE {schema}.card_tags (
    card_id bigint NOT NULL,
    tag_id  bigint NOT NULL,
    PRIMARY KEY (card_id, tag_id)
);
CREATE INDEX card_tags_tag_idx ON {schema}.card_tags (tag_id);

-- Per-entity sync state: cursor, last full / incremental sync, resume point, row count.
CREATE TABLE {schema}.sync_metadata (
    entity                   text PRIMARY KEY,
    cursor                   timestamptz,
    last_full_sync_at        timestamptz,
    last_incremental_sync_at timestamptz,
    resume                   text,
    row_count                bigint,
    updated_at               timestamptz NOT NULL DEFAULT now()
);

-- The run log: one row per run (full, incremental, selective, webhook).
CREATE TABLE {schema}.sync_logs (
    id            bigserial PRIMARY KEY,
    kind          text NOT NULL,
    entities      text[] NOT NULL DEFAULT '{}',
    scope         text,
    started_at    timestamptz NOT NULL,
    finished_at   timestamptz,
    status        text NOT NULL,
    rows_inserted bigint NOT NULL DEFAULT 0,
    rows_updated  bigint NOT NULL DEFAULT 0,
    rows_deleted  bigint NOT NULL DEFAULT 0,
    api_requests  bigint NOT NULL DEFAULT 0,
    retries       bigint NOT NULL DEFAULT 0,
    error         text,
    stats         jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX sync_logs_started_at_idx ON {schema}.sync_logs (started_at);
CREATE INDEX sync_logs_running_idx ON {schema}.sync_logs (id) WHERE status = 'running';

-- Who holds the one-sync-at-a-time lock. With the advisory lock (default) this row is
-- informational (the lock itself is a session-level advisory lock); with the table lock it is
-- the lock.
CREATE TABLE {schema}.sync_lock (
    name         text PRIMARY KEY,
    holder       text NOT NULL,
    acquired_at  timestamptz NOT NULL,
    heartbeat_at timestamptz NOT NULL,
    backend_pid  integer
);
