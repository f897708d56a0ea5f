-- kaiten-sync schema for SQLite, version 5: sweep marks beside the rows.
--
-- A full listing marks every record it lists as seen by its sweep, so that the rows it did not list
-- can be found at the end (`unseen`). Rows the listing writes anyway carry the mark in their
-- `seen_sweep` column; an unchanged row gets a small row here instead of having its whole record
-- (a card is ~4 KiB) rewritten only to move `seen_sweep`. Written in the page's transaction, so a
-- resumed listing still knows what its earlier pages saw. Marks of older sweeps of a kind are
-- dropped when a newer sweep of that kind writes its first mark.
--
-- Appended in rowid order, never keyed by the record's id: a key on `id` would take each page's
-- marks at random places in its B-tree and rewrite most of its leaves on every commit. `unseen`
-- reads the sweep's marks once through the index on (kind, sweep); a record listed twice in one
-- sweep may have two marks.
CREATE TABLE sweep_marks (
    kind  TEXT    NOT NULL,
    sweep INTEGER NOT NULL,
    id    INTEGER NOT NULL
);
CREATE INDEX sweep_marks_kind_sweep ON sweep_marks (kind, sweep);
