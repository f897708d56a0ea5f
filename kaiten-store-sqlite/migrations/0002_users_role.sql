-- kaiten-sync schema for SQLite, version 2: users' role.
--
-- `role` is the user's role in the company as Kaiten sends it: 1 owner, 2 user, 3 deactivated.
-- The mirror lists users with `include_inactive=true`, so deactivated users (whom cards still name
-- as owner, member or property value) are stored too; `activated` and `role` tell them apart.
ALTER TABLE users ADD COLUMN role INTEGER;

-- Users already stored: the role from their raw JSON (an integer, or a string of digits).
UPDATE users SET role = CAST(json_extract(raw, '$.role') AS INTEGER)
 WHERE json_type(raw, '$.role') = 'integer'
    OR (json_type(raw, '$.role') = 'text' AND json_extract(raw, '$.role') GLOB '[0-9]*'
        AND NOT json_extract(raw, '$.role') GLOB '*[^0-9]*');
