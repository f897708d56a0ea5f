-- kaiten-sync schema, version 5: sweep marks beside the rows.
--
-- A full listing marks every record it lists as seen by its sweep, so that the rows it did not list
-- can be found at the end (`unseen`). Rows the listing writes anyway carry the mark in their
-- `seen_sweep` column; unchanged rows are marked here instead: under MVCC, moving `seen_sweep` on
-- the row wrote a new version of the whole record (a card is ~4 KiB) and, unless the update stayed
-- on its page, new entries in every index. Written by the page function, in the page's
-- transaction, so a resumed listing still knows what its earlier pages saw (a logged table: it
-- must survive a crash as the page does).
--
-- One row per page, holding the ids of the page's unchanged records (`kind` is the entity table's
-- name): a page appends one row and one index entry however many records it marks, and the marks
-- of a whole sweep (100,000 cards: about 130 rows) are deleted at once when a newer sweep of the
-- kind writes its first mark. `unseen` reads the sweep's rows once through the index on
-- (kind, sweep) and unnests their ids; a record listed twice in one sweep may be marked twice.
CREATE TABLE {schema}.sweep_marks (
    kind  text     NOT NULL,
    sweep bigint   NOT NULL,
    ids   bigint[] NOT NULL
);
CREATE INDEX sweep_marks_kind_sweep_idx ON {schema}.sweep_marks (kind, sweep);
