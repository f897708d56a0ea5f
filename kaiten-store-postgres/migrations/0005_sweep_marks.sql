-- kaiten-sync schema, version 5: sweep marks beside the rows.
--
-- A full listing marks every record it lists as seen by its sweep, so that the rows it did not list
-- can be found at the end (`unseen`). Rows the listing writes anyway carry the mark in their
-- `seen_sweep` column; an unchanged row gets a small row here instead: under MVCC, moving
-- `seen_sweep` on the row wrote a new version of the whole record (a card is ~4 KiB) and, unless
-- the update stayed on its page, new entries in every index. Written by the page function, in the
-- page's transaction, so a resumed listing still knows what its earlier pages saw (logged, like
-- the page: it must survive a crash as the page does). Marks of older sweeps of a kind are
-- deleted when a newer sweep of that kind writes its first marks.
--
-- Appended, never keyed by the record's id: `unseen` reads the sweep's marks once through the
-- index on (kind, sweep); a record listed twice in one sweep may have two marks. `kind` is the
-- entity table's name.
CREATE TABLE {schema}.sweep_marks (
    kind  text   NOT NULL,
    sweep bigint NOT NULL,
    id    bigint NOT NULL
);
CREATE INDEX sweep_marks_kind_sweep_idx ON {schema}.sweep_marks (kind, sweep);
