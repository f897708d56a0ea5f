-- kaiten-sync schema, version 2: users' role.
--
-- `role` is the user's role in the company as Kaiten sends it: 1 owner, 2 user, 3 deactivated.
-- The mirror lists users with `include_inactive=true`, so deactivated users (whom cards still name
-- as owner, member or property value) are stored too; `activated` and `role` tell them apart.
ALTER TABLE {schema}.users ADD COLUMN role bigint;

-- Users already stored: the role from their raw JSON (an integer, or a string of digits).
UPDATE {schema}.users SET role = (raw->>'role')::bigint
 WHERE (jsonb_typeof(raw->'role') = 'number' AND raw->>'role' ~ '^-?[0-9]{1,18}$')
    OR (jsonb_typeof(raw->'role') = 'string' AND raw->>'role' ~ '^[0-9]{1,18}$');
