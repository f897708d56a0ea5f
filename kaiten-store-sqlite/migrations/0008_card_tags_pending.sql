-- The tag links of a first full sync, appended here while the listing fills the empty `cards`
-- table (its indexes deferred, see migration 6), and moved into `card_tags` in key order when the
-- deferred indexes are built, in the same transaction. `card_tags` is keyed by card, and a listing
-- arrives in `updated` order, random in card id: written directly, every transaction rewrote most
-- of its pages (a third of all bytes a first sync of 100,000 cards wrote, for a 1.5 MB table).
-- No key and no index: rows are only appended, and read back whole, once.
CREATE TABLE card_tags_pending (
    card_id INTEGER NOT NULL,
    tag_id  INTEGER NOT NULL
);
