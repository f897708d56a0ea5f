-- `cards` keeps its rows in the order they are first written (a rowid of its own) instead of in
-- card id order (`id INTEGER PRIMARY KEY`). A full listing comes in `updated` order, which is
-- random in id: with ~4 KiB rows (about one a page) every insert split a leaf in the middle of
-- the table and rebalanced its neighbours, so a first sync wrote each page several times over.
-- Now a new row goes at the end of the table, and only the small unique index on `id` takes random
-- inserts. Lookups by id (`WHERE id = ?`, `id IN (...)`) and `ON CONFLICT(id)` use that index.
CREATE TABLE cards_new (
    id            INTEGER NOT NULL UNIQUE,
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
INSERT INTO cards_new (id, uid, title, description, state, condition, archived, asap, blocked, space_id, board_id,
                       column_id, lane_id, owner_id, type_id, sort_order, version, size, due_date, external_id,
                       properties, created, updated, last_moved_at, completed_at, raw, synced_at, deleted_at,
                       seen_sweep)
SELECT id, uid, title, description, state, condition, archived, asap, blocked, space_id, board_id,
       column_id, lane_id, owner_id, type_id, sort_order, version, size, due_date, external_id,
       properties, created, updated, last_moved_at, completed_at, raw, synced_at, deleted_at,
       seen_sweep
FROM cards ORDER BY id;
DROP TABLE cards;
ALTER TABLE cards_new RENAME TO cards;
-- As in version 1. (`board_id` also serves deletion detection: `unseen` scoped to boards.)
CREATE INDEX cards_board_id  ON cards (board_id);
CREATE INDEX cards_column_id ON cards (column_id);
CREATE INDEX cards_lane_id   ON cards (lane_id);
CREATE INDEX cards_space_id  ON cards (space_id);
CREATE INDEX cards_owner_id  ON cards (owner_id);
CREATE INDEX cards_type_id   ON cards (type_id);
CREATE INDEX cards_updated   ON cards (updated);
CREATE INDEX cards_synced_at ON cards (synced_at);
CREATE INDEX cards_deleted_at ON cards (deleted_at) WHERE deleted_at IS NOT NULL;
