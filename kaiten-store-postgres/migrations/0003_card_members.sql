-- kaiten-sync schema, version 3: card members.
--
-- Who works on a card: `type` 1 member, 2 responsible. Kaiten sends a card's members only in
-- `GET /cards/{id}` (`members[]`), never in the `GET /cards` listing, so the page function of
-- `cards` replaces a card's rows whenever it writes a card carrying its member list (the engine's
-- verifications, webhook refetches, incremental runs with the member backfill on) and leaves them
-- alone for a card written from a listing. Like `card_tags`, the rows of a card marked deleted are
-- kept: join `cards` on `deleted_at IS NULL` for live cards. No foreign keys: the rows are written
-- by the statement that writes their card (as `card_tags`), and a member may be a user the mirror
-- has not stored (yet).
CREATE TABLE {schema}.card_members (
    card_id bigint NOT NULL,
    user_id bigint NOT NULL,
    type    bigint NOT NULL,
    PRIMARY KEY (card_id, user_id)
);
-- "What is user X on": the first thing people ask of members.
CREATE INDEX card_members_user_idx ON {schema}.card_members (user_id);

-- Members of the cards already stored with their member list (cards fetched one by one before
-- this version), parsed as `kaiten_sync::store::CardMembers` does: the user is `user_id`, else
-- `id` (integers only, positive), the type `type` (1 when it is not an integer), the higher type
-- when a user is listed twice.
INSERT INTO {schema}.card_members (card_id, user_id, type)
SELECT card_id, user_id, max(type)
FROM (
    SELECT c.id AS card_id,
           CASE WHEN jsonb_typeof(m->'user_id') = 'number' AND m->>'user_id' ~ '^-?[0-9]{1,18}$'
                    THEN (m->>'user_id')::bigint
                WHEN jsonb_typeof(m->'id') = 'number' AND m->>'id' ~ '^-?[0-9]{1,18}$'
                    THEN (m->>'id')::bigint
           END AS user_id,
           CASE WHEN jsonb_typeof(m->'type') = 'number' AND m->>'type' ~ '^-?[0-9]{1,18}$'
                    THEN (m->>'type')::bigint
                ELSE 1
           END AS type
    FROM {schema}.cards AS c
    CROSS JOIN LATERAL jsonb_array_elements(
        CASE WHEN jsonb_typeof(c.raw->'members') = 'array' THEN c.raw->'members' END
    ) AS m
) AS members
WHERE user_id > 0
GROUP BY card_id, user_id;
