-- kaiten-sync schema for SQLite, version 3: card members.
--
-- Who works on a card: `type` 1 member, 2 responsible. Kaiten sends a card's members only in
-- `GET /cards/{id}` (`members[]`), never in the `GET /cards` listing, so the rows of a card are
-- replaced whenever a card carrying its member list is written (the engine's verifications,
-- webhook refetches, and incremental runs with the member backfill on), and are left alone by a
-- card written from a listing. Like `card_tags`, the rows of a card marked deleted are kept: join
-- `cards` on `deleted_at IS NULL` for live cards. No foreign keys (see version 1): a member may be
-- a user the mirror has not stored (yet).
CREATE TABLE card_members (
    card_id INTEGER NOT NULL,
    user_id INTEGER NOT NULL,
    type    INTEGER NOT NULL,
    PRIMARY KEY (card_id, user_id)
) WITHOUT ROWID;
-- "What is user X on": the first thing people ask of members.
CREATE INDEX card_members_user_id ON card_members (user_id);

-- Members of the cards already stored with their member list (cards fetched one by one before
-- this version), parsed as `kaiten_sync::store::CardMembers` does: the user is `user_id`, else
-- `id` (integers only, positive), the type `type` (1 when it is not an integer), the higher type
-- when a user is listed twice.
INSERT INTO card_members (card_id, user_id, type)
SELECT card_id, user_id, MAX(type)
FROM (
    -- Paths into `raw` rather than `m.value`, which is not JSON for a scalar member.
    SELECT c.id AS card_id,
           CASE WHEN json_type(c.raw, m.fullkey || '.user_id') = 'integer'
                    THEN json_extract(c.raw, m.fullkey || '.user_id')
                WHEN json_type(c.raw, m.fullkey || '.id') = 'integer'
                    THEN json_extract(c.raw, m.fullkey || '.id')
           END AS user_id,
           CASE WHEN json_type(c.raw, m.fullkey || '.type') = 'integer'
                    THEN json_extract(c.raw, m.fullkey || '.type')
                ELSE 1
           END AS type
    FROM cards AS c, json_each(c.raw, '$.members') AS m
    WHERE json_type(c.raw, '$.members') = 'array'
)
WHERE user_id > 0
GROUP BY card_id, user_id;
