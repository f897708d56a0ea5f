-- The secondary indexes of `cards` set aside while a first full sync fills the empty table: the
-- store drops them when such a listing writes its first page and builds each once when the card
-- state is next saved (the end of the listing) or at the next `migrate`, instead of updating all of
-- them on every page (random inserts all over their leaves, written again by every transaction).
-- Their definitions wait here, in the same transactions as the drops and the rebuilds.
CREATE TABLE deferred_indexes (
    name TEXT PRIMARY KEY,
    sql  TEXT NOT NULL
);
