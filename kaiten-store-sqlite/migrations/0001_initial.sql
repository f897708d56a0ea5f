-- kaiten-sync schema for SQLite, version 1.
--
-- Mirrors `kaiten_sync::schema::TABLES`: one table per entity kind with `id`, the typed columns in
-- the order `TABLES` lists them, then `raw`, `synced_at`, `deleted_at`, `seen_sweep`. The test
-- `schema_matches_tables` in this crate fails when the two drift apart.
--
-- Types: BigInt -> INTEGER, Float -> REAL, Text -> TEXT, Bool -> INTEGER 0/1, Json -> TEXT (JSON),
-- Timestamp -> TEXT, RFC 3339 UTC with milliseconds (`2025-01-01T00:00:05.000Z`), so text order is
-- time order.
--
-- No FOREIGN KEY constraints, on purpose (and connections run with `PRAGMA foreign_keys = OFF`):
-- the mirror must never refuse a record because its parent is not stored yet (a card of a board
-- that appeared after the boards were listed, a webhook for an unknown board), and rows are never
-- removed (deletion only sets `deleted_at`), so there is no cascade to maintain. The engine fetches
-- missing parents or lets them arrive later.

CREATE TABLE spaces (
    id                INTEGER PRIMARY KEY,
    uid               TEXT,
    title             TEXT,
    archived          INTEGER,
    parent_entity_uid TEXT,
    sort_order        REAL,
    external_id       TEXT,
    created           TEXT,
    updated           TEXT,
    raw               TEXT NOT NULL,
    synced_at         TEXT NOT NULL,
    deleted_at        TEXT,
    seen_sweep        INTEGER
);

CREATE TABLE users (
    id          INTEGER PRIMARY KEY,
    uid         TEXT,
    full_name   TEXT,
    username    TEXT,
    email       TEXT,
    activated   INTEGER,
    is_virtual  INTEGER,
    created     TEXT,
    updated     TEXT,
    raw         TEXT NOT NULL,
    synced_at   TEXT NOT NULL,
    deleted_at  TEXT,
    seen_sweep  INTEGER
);

CREATE TABLE card_types (
    id          INTEGER PRIMARY KEY,
    uid         TEXT,
    name        TEXT,
    letter      TEXT,
    color       INTEGER,
    archived    INTEGER,
    created     TEXT,
    updated     TEXT,
    raw         TEXT NOT NULL,
    synced_at   TEXT NOT NULL,
    deleted_at  TEXT,
    seen_sweep  INTEGER
);

CREATE TABLE tags (
    id          INTEGER PRIMARY KEY,
    uid         TEXT,
    name        TEXT,
    color       INTEGER,
    archived    INTEGER,
    created     TEXT,
    updated     TEXT,
    raw         TEXT NOT NULL,
    synced_at   TEXT NOT NULL,
    deleted_at  TEXT,
    seen_sweep  INTEGER
);

CREATE TABLE property_definitions (
    id           INTEGER PRIMARY KEY,
    uid          TEXT,
    name         TEXT,
    type         TEXT,
    condition    INTEGER,
    multi_select INTEGER,
    external_id  TEXT,
    created      TEXT,
    updated      TEXT,
    raw          TEXT NOT NULL,
    synced_at    TEXT NOT NULL,
    deleted_at   TEXT,
    seen_sweep   INTEGER
);

CREATE TABLE property_select_values (
    id                 INTEGER PRIMARY KEY,
    uid                TEXT,
    custom_property_id INTEGER,
    value              TEXT,
    color              INTEGER,
    condition          INTEGER,
    sort_order         REAL,
    created            TEXT,
    updated            TEXT,
    raw                TEXT NOT NULL,
    synced_at          TEXT NOT NULL,
    deleted_at         TEXT,
    seen_sweep         INTEGER
);
CREATE INDEX property_select_values_custom_property_id ON property_select_values (custom_property_id);

CREATE TABLE boards (
    id          INTEGER PRIMARY KEY,
    uid         TEXT,
    space_id    INTEGER,
    title       TEXT,
    description TEXT,
    external_id TEXT,
    sort_order  REAL,
    archived    INTEGER,
    created     TEXT,
    updated     TEXT,
    raw         TEXT NOT NULL,
    synced_at   TEXT NOT NULL,
    deleted_at  TEXT,
    seen_sweep  INTEGER
);
CREATE INDEX boards_space_id ON boards (space_id);

CREATE TABLE columns (
    id               INTEGER PRIMARY KEY,
    uid              TEXT,
    board_id         INTEGER,
    parent_column_id INTEGER,
    title            TEXT,
    sort_order       REAL,
    type             INTEGER,
    wip_limit        INTEGER,
    external_id      TEXT,
    created          TEXT,
    updated          TEXT,
    raw              TEXT NOT NULL,
    synced_at        TEXT NOT NULL,
    deleted_at       TEXT,
    seen_sweep       INTEGER
);
CREATE INDEX columns_board_id ON columns (board_id);

CREATE TABLE lanes (
    id          INTEGER PRIMARY KEY,
    uid         TEXT,
    board_id    INTEGER,
    title       TEXT,
    sort_order  REAL,
    condition   INTEGER,
    wip_limit   INTEGER,
    external_id TEXT,
    created     TEXT,
    updated     TEXT,
    raw         TEXT NOT NULL,
    synced_at   TEXT NOT NULL,
    deleted_at  TEXT,
    seen_sweep  INTEGER
);
CREATE INDEX lanes_board_id ON lanes (board_id);

CREATE TABLE cards (
    id            INTEGER PRIMARY KEY,
    uid           TEXT,
    title         TEXT,
    description   TEXT,
    state         INTEGER,
    condition     INTEGER,
    archived      INTEGER,
    asap          INTEGER,
    blocked       INTEGER,
    space_id      INTEGER,
    board_id      INTEGER,
    column_id     INTEGER,
    lane_id       INTEGER,
    owner_id      INTEGER,
    type_id       INTEGER,
    sort_order    REAL,
    version       INTEGER,
    size          REAL,
    due_date      TEXT,
    external_id   TEXT,
    properties    TEXT,
    created       TEXT,
    updated       TEXT,
    last_moved_at TEXT,
    completed_at  TEXT,
    raw           TEXT NOT NULL,
    synced_at     TEXT NOT NULL,
    deleted_at    TEXT,
    seen_sweep    INTEGER
);
-- `board_id` also serves deletion detection (`unseen` scoped to boards).
CREATE INDEX cards_board_id  ON cards (board_id);
CREATE INDEX cards_column_id ON cards (column_id);
CREATE INDEX cards_lane_id   ON cards (lane_id);
CREATE INDEX cards_space_id  ON cards (space_id);
CREATE INDEX cards_owner_id  ON cards (owner_id);
CREATE INDEX cards_type_id   ON cards (type_id);
CREATE INDEX cards_updated   ON cards (updated);
CREATE INDEX cards_synced_at ON cards (synced_at);

-- Partial indexes over the (few) deleted rows: "what was deleted, and when" and the deleted count
-- of `counts()` without a table scan, at no cost for live rows. (A partial index over *live* rows
-- would be nearly as large as the table and duplicate the indexes above.)
CREATE INDEX spaces_deleted_at                 ON spaces (deleted_at)                 WHERE deleted_at IS NOT NULL;
CREATE INDEX users_deleted_at                  ON users (deleted_at)                  WHERE deleted_at IS NOT NULL;
CREATE INDEX card_types_deleted_at             ON card_types (deleted_at)             WHERE deleted_at IS NOT NULL;
CREATE INDEX tags_deleted_at                   ON tags (deleted_at)                   WHERE deleted_at IS NOT NULL;
CREATE INDEX property_definitions_deleted_at   ON property_definitions (deleted_at)   WHERE deleted_at IS NOT NULL;
CREATE INDEX property_select_values_deleted_at ON property_select_values (deleted_at) WHERE deleted_at IS NOT NULL;
CREATE INDEX boards_deleted_at                 ON boards (deleted_at)                 WHERE deleted_at IS NOT NULL;
CREATE INDEX columns_deleted_at                ON columns (deleted_at)                WHERE deleted_at IS NOT NULL;
CREATE INDEX lanes_deleted_at                  ON lanes (deleted_at)                  WHERE deleted_at IS NOT NULL;
CREATE INDEX cards_deleted_at                  ON cards (deleted_at)                  WHERE deleted_at IS NOT NULL;

-- A card's tags. Rows follow the card: replaced whenever the card row is written. No index on
-- tag_id: the table is narrow (16 bytes a row), so "cards with tag X" scans it in milliseconds,
-- and an index would cost every card insert two more B-tree writes.
CREATE TABLE card_tags (
    card_id INTEGER NOT NULL,
    tag_id  INTEGER NOT NULL,
    PRIMARY KEY (card_id, tag_id)
) WITHOUT ROWID;

-- Per-entity sync state. `entity` is the kind name (`cards`, `select_values`, ...).
CREATE TABLE sync_metadata (
    entity                   TEXT PRIMARY KEY,
    cursor                   TEXT,
    last_full_sync_at        TEXT,
    last_incremental_sync_at TEXT,
    resume                   TEXT,
    row_count                INTEGER,
    updated_at               TEXT NOT NULL
);

-- The run log. `entities` is a comma list of kind names; `stats` the per-kind counters as JSON
-- (`{"cards": {"pages": 3, "fetched": 250, ...}}`); rows_* are their totals.
CREATE TABLE sync_logs (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    kind          TEXT NOT NULL,
    entities      TEXT NOT NULL,
    scope         TEXT,
    started_at    TEXT NOT NULL,
    finished_at   TEXT,
    status        TEXT NOT NULL,
    rows_inserted INTEGER NOT NULL DEFAULT 0,
    rows_updated  INTEGER NOT NULL DEFAULT 0,
    rows_deleted  INTEGER NOT NULL DEFAULT 0,
    api_requests  INTEGER NOT NULL DEFAULT 0,
    retries       INTEGER NOT NULL DEFAULT 0,
    error         TEXT,
    stats         TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX sync_logs_running ON sync_logs (id) WHERE status = 'running';

-- The one-sync-at-a-time lock: at most one row per name (`sync`).
CREATE TABLE sync_lock (
    name         TEXT PRIMARY KEY,
    holder       TEXT NOT NULL,
    acquired_at  TEXT NOT NULL,
    heartbeat_at TEXT NOT NULL
);
