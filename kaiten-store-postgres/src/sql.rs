//! SQL generated from [`kaiten_sync::schema::TABLES`], once per store: the column lists of ten
//! tables are never written out by hand outside the migration.

use kaiten_sync::schema::{ColumnType, TableDef, TABLES};
use kaiten_sync::EntityKind;

/// The array type a column travels in (JSON travels as text and is cast on the server).
fn array_type(ty: ColumnType) -> &'static str {
    match ty {
        ColumnType::BigInt => "bigint[]",
        ColumnType::Float => "double precision[]",
        ColumnType::Text | ColumnType::Json => "text[]",
        ColumnType::Bool => "boolean[]",
        ColumnType::Timestamp => "timestamptz[]",
    }
}

/// `"name"`: every identifier is quoted (`type`, `columns`, `value` are keywords).
pub(crate) fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Statements of one entity table.
#[derive(Debug, Clone)]
pub(crate) struct TableSql {
    /// Calls the table's page function (parameters: [`PageParams`]); returns `(id, inserted)` of
    /// rows written and `(id, NULL)` of rows recognised as unchanged without a write.
    pub(crate) write_page: String,
    /// The page function's bare name (`write_page_cards_<digest>`).
    pub(crate) function_name: String,
    /// `CREATE FUNCTION` of the page function, installed by `migrate`.
    pub(crate) function_ddl: String,
    /// `$1` id.
    pub(crate) get: String,
    /// `$1` sweep.
    pub(crate) unseen_all: String,
    /// `$1` sweep, `$2` parent ids; `None` when the table has no scope column.
    pub(crate) unseen_scoped: Option<String>,
    /// `$1` ids, `$2` time.
    pub(crate) mark_deleted: String,
    /// `$1` ids.
    pub(crate) existing: String,
    /// What a full listing's page needs to leave unchanged rows out (`$1` ids): id, raw hash,
    /// deleted flag, sweep.
    pub(crate) stored: String,
    pub(crate) ids_all: String,
    pub(crate) ids_live: String,
}

/// Every statement of a store, for one schema.
#[derive(Debug, Clone)]
pub(crate) struct Statements {
    pub(crate) tables: Vec<TableSql>,
    pub(crate) counts: String,
    pub(crate) card_tag_ids: String,
    pub(crate) card_members: String,
    pub(crate) state_upsert: String,
    pub(crate) state_get: String,
    pub(crate) states_all: String,
    pub(crate) run_insert: String,
    pub(crate) run_update: String,
    pub(crate) runs_interrupt: String,
    pub(crate) runs_recent: String,
    pub(crate) lock_table_take: String,
    pub(crate) lock_row: String,
    pub(crate) lock_row_write: String,
    pub(crate) lock_heartbeat: String,
    pub(crate) lock_delete: String,
}

impl Statements {
    /// Statements for a schema whose name was validated (`qschema` is quoted).
    pub(crate) fn new(qschema: &str) -> Self {
        let s = qschema;
        let run_columns =
            "id, kind, entities, scope, started_at, finished_at, status, api_requests, retries, error, stats";
        Self {
            tables: TABLES.iter().map(|t| table_sql(s, t)).collect(),
            counts: counts_sql(s),
            card_tag_ids: format!("SELECT tag_id FROM {s}.card_tags WHERE card_id = $1 ORDER BY tag_id"),
            card_members: format!("SELECT user_id, \"type\" FROM {s}.card_members WHERE card_id = $1 ORDER BY user_id"),
            state_upsert: format!(
                "INSERT INTO {s}.sync_metadata AS m (entity, cursor, last_full_sync_at, last_incremental_sync_at, \
                 resume, row_count, updated_at) VALUES ($1, $2, $3, $4, $5, $6, now()) \
                 ON CONFLICT (entity) DO UPDATE SET cursor = EXCLUDED.cursor, \
                 last_full_sync_at = EXCLUDED.last_full_sync_at, \
                 last_incremental_sync_at = EXCLUDED.last_incremental_sync_at, resume = EXCLUDED.resume, \
                 row_count = EXCLUDED.row_count, updated_at = EXCLUDED.updated_at"
            ),
            state_get: format!(
                "SELECT entity, cursor, last_full_sync_at, last_incremental_sync_at, resume, row_count \
                 FROM {s}.sync_metadata WHERE entity = $1"
            ),
            states_all: format!(
                "SELECT entity, cursor, last_full_sync_at, last_incremental_sync_at, resume, row_count \
                 FROM {s}.sync_metadata"
            ),
            run_insert: format!(
                "INSERT INTO {s}.sync_logs (kind, entities, scope, started_at, finished_at, status, rows_inserted, \
                 rows_updated, rows_deleted, api_requests, retries, error, stats) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING id"
            ),
            run_update: format!(
                "UPDATE {s}.sync_logs SET kind = $2, entities = $3, scope = $4, started_at = $5, finished_at = $6, \
                 status = $7, rows_inserted = $8, rows_updated = $9, rows_deleted = $10, api_requests = $11, \
                 retries = $12, error = $13, stats = $14 WHERE id = $1"
            ),
            runs_interrupt: format!(
                "UPDATE {s}.sync_logs SET status = 'interrupted', error = $2 \
                 WHERE status = 'running' AND kind <> 'webhook' AND id <> $1"
            ),
            runs_recent: format!("SELECT {run_columns} FROM {s}.sync_logs ORDER BY id DESC LIMIT $1"),
            // $1 holder, $2 stale_after in seconds. Returns a row when the caller holds the lock now.
            lock_table_take: format!(
                "INSERT INTO {s}.sync_lock AS l (name, holder, acquired_at, heartbeat_at, backend_pid) \
                 VALUES ('sync', $1, clock_timestamp(), clock_timestamp(), NULL) \
                 ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, \
                 acquired_at = CASE WHEN l.holder = EXCLUDED.holder THEN l.acquired_at ELSE EXCLUDED.acquired_at END, \
                 heartbeat_at = EXCLUDED.heartbeat_at, backend_pid = NULL \
                 WHERE l.holder = EXCLUDED.holder \
                 OR extract(epoch FROM clock_timestamp() - l.heartbeat_at) > $2 \
                 RETURNING holder"
            ),
            // $1 stale_after in seconds, $2 advisory key: the row, whether it is stale, and which
            // backend holds the advisory lock.
            lock_row: format!(
                "SELECT l.holder, l.acquired_at, l.heartbeat_at, l.backend_pid, \
                 extract(epoch FROM clock_timestamp() - l.heartbeat_at) > $1 AS stale, \
                 (SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted \
                   AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
                   AND ((classid::bigint << 32) | objid::bigint) = $2::bigint AND objsubid = 1 LIMIT 1) AS lock_pid \
                 FROM (SELECT 1) AS one LEFT JOIN {s}.sync_lock l ON l.name = 'sync'"
            ),
            // $1 holder. Written by the advisory lock's own connection.
            lock_row_write: format!(
                "INSERT INTO {s}.sync_lock AS l (name, holder, acquired_at, heartbeat_at, backend_pid) \
                 VALUES ('sync', $1, clock_timestamp(), clock_timestamp(), pg_backend_pid()) \
                 ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, \
                 acquired_at = CASE WHEN l.holder = EXCLUDED.holder AND l.backend_pid = EXCLUDED.backend_pid \
                   THEN l.acquired_at ELSE EXCLUDED.acquired_at END, \
                 heartbeat_at = EXCLUDED.heartbeat_at, backend_pid = EXCLUDED.backend_pid"
            ),
            lock_heartbeat: format!(
                "UPDATE {s}.sync_lock SET heartbeat_at = clock_timestamp() WHERE name = 'sync' AND holder = $1"
            ),
            lock_delete: format!("DELETE FROM {s}.sync_lock WHERE name = 'sync' AND holder = $1"),
        }
    }

    /// The statements of a kind's table.
    pub(crate) fn table(&self, kind: EntityKind) -> &TableSql {
        &self.tables[kind as usize]
    }
}

/// Parameter numbers of a page statement, after `$1` ids and `$2..=$n+1` typed columns.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PageParams {
    /// Typed columns of the table.
    pub(crate) n: usize,
}

impl PageParams {
    pub(crate) fn raw(self) -> usize {
        self.n + 2
    }
    pub(crate) fn hash(self) -> usize {
        self.n + 3
    }
    pub(crate) fn deleted(self) -> usize {
        self.n + 4
    }
    pub(crate) fn synced_at(self) -> usize {
        self.n + 5
    }
    pub(crate) fn sweep(self) -> usize {
        self.n + 6
    }
    /// Six parameters of the entity state: entity (`NULL`: no state), cursor, last full sync,
    /// last incremental sync, resume, row count.
    pub(crate) fn state(self) -> usize {
        self.n + 7
    }
    /// Whether the page commits without waiting for the WAL flush.
    pub(crate) fn async_commit(self) -> usize {
        self.n + 13
    }
    /// Ids of the page's rows left out of the arrays because the caller found them stored
    /// unchanged (same hash and deleted state) and not yet carrying the sweep: they get its mark.
    pub(crate) fn seen(self) -> usize {
        self.n + 14
    }
    /// Cards only: card ids and tag ids of the page's tag links.
    pub(crate) fn tag_cards(self) -> usize {
        self.n + 15
    }
    pub(crate) fn tag_ids(self) -> usize {
        self.n + 16
    }
    /// Cards only: the cards whose member list the page carries (their members are replaced).
    pub(crate) fn member_lists(self) -> usize {
        self.n + 17
    }
    /// Cards only: card ids, user ids and types of the page's members.
    pub(crate) fn member_cards(self) -> usize {
        self.n + 18
    }
    pub(crate) fn member_users(self) -> usize {
        self.n + 19
    }
    pub(crate) fn member_types(self) -> usize {
        self.n + 20
    }
    /// How many parameters the page function of a table takes.
    pub(crate) fn count(self, cards: bool) -> usize {
        if cards {
            self.member_types()
        } else {
            self.seen()
        }
    }
}

fn table_sql(s: &str, t: &TableDef) -> TableSql {
    let table = format!("{s}.{}", ident(t.name));
    let n = t.columns.len();
    let p = PageParams { n };
    let cols: Vec<String> = t.columns.iter().map(|c| ident(c.name)).collect();
    let col_list = cols.join(", ");

    let mut unnest_args = vec!["$1::bigint[]".to_owned()];
    unnest_args.extend(t.columns.iter().enumerate().map(|(i, c)| format!("${}::{}", i + 2, array_type(c.ty))));
    unnest_args.push(format!("${}::text[]", p.raw()));
    unnest_args.push(format!("${}::bigint[]", p.hash()));
    unnest_args.push(format!("${}::boolean[]", p.deleted()));
    let select_cols: Vec<String> = t
        .columns
        .iter()
        .zip(&cols)
        .map(|(c, q)| if c.ty == ColumnType::Json { format!("u.{q}::jsonb") } else { format!("u.{q}") })
        .collect();
    let set_cols: Vec<String> = cols.iter().map(|q| format!("{q} = EXCLUDED.{q}")).collect();
    let has_version = t.columns.iter().any(|c| c.name == "version");

    // kaiten_sync's rule (memory store `incoming_is_not_older`): by `updated` when both are known
    // and differ, otherwise by `version` when both are known. `old` is the stored row, `new` the
    // incoming one.
    let not_older = |old: &str, new: &str| {
        let version_rule = if has_version {
            format!("NOT COALESCE({new}.\"version\" < {old}.\"version\", FALSE)")
        } else {
            "TRUE".to_owned()
        };
        format!(
            "(CASE WHEN {old}.\"updated\" IS NOT NULL AND {new}.\"updated\" IS NOT NULL \
             AND {old}.\"updated\" <> {new}.\"updated\" THEN {new}.\"updated\" > {old}.\"updated\" \
             ELSE {version_rule} END)"
        )
    };

    // A whole page in one statement (the body of the table's page function):
    // - `u`: the incoming rows, each marked `candidate` unless its stored copy has the same raw
    //   hash and deleted state (or is newer): read without a lock, so an unchanged record costs an
    //   index lookup, no JSON parsing and no row lock;
    // - `up`: candidates go through INSERT ... ON CONFLICT DO UPDATE, which decides "changed (the
    //   JSON differs, or the deleted state) and not older" again under the row lock;
    // - `seen`, `marks`, `pruned`: rows the sweep saw but the statement does not write (not
    //   candidates, and candidates the upsert's WHERE skipped: same JSON under another hash, or
    //   older than stored) are marked by one `sweep_marks` row holding their ids, rather than by a
    //   new version of each whole record for `seen_sweep` (rows written carry the sweep in their
    //   own write; those already carrying the sweep need no mark). The first page of a sweep that
    //   writes a mark deletes the kind's marks of older sweeps (one row per page: cheap); once
    //   this sweep has marks, an index probe skips that;
    // - `rehash`: a stored row with the same JSON and deleted state under another hash (written from
    //   another spelling of the JSON: key order, spacing) takes the incoming text's hash, so that
    //   the next listing skips it at `u`. Never a row `up` writes (those differ in JSON or state);
    // - `state`: the entity state, when given;
    // - cards: the tag links of the cards written are replaced: links no longer listed are
    //   deleted (only cards that existed can have any), the others inserted unless stored (even
    //   for a card inserted now: someone may have deleted a card row by hand and left its links).
    //   Members likewise, but only for the cards written that carry their member list (a card of
    //   the list shape keeps its members): rows no longer listed are deleted, the others inserted
    //   or given their new type.
    //   These never touch the same row either, so their order (unspecified) does not matter.
    // Returns `(id, inserted)` for rows written and `(id, NULL)` for rows that were not candidates.
    let sweep = format!("${}::bigint", p.sweep());
    let kind = format!("'{}'", t.name.replace('\'', "''"));
    let marks = format!("{s}.sweep_marks");
    let synced = format!("${}::timestamptz", p.synced_at());
    let st = p.state();
    let mut sql = format!(
        "WITH u AS MATERIALIZED (\
           SELECT u.*, s.seen_sweep AS stored_sweep, (s.\"id\" IS NULL OR ((s.raw_hash IS DISTINCT FROM u.raw_hash \
             OR (s.deleted_at IS NULL) = u.deleted) AND {prefilter})) AS candidate \
           FROM UNNEST({unnest}) AS u(\"id\", {col_list}, raw_text, raw_hash, deleted) \
           LEFT JOIN {table} AS s ON s.\"id\" = u.\"id\"), \
         up AS (INSERT INTO {table} AS t (\"id\", {col_list}, raw, raw_hash, synced_at, deleted_at, seen_sweep) \
           SELECT u.\"id\", {select_cols}, u.raw_text::jsonb, u.raw_hash, {synced}, \
             CASE WHEN u.deleted THEN {synced} END, {sweep} \
           FROM u WHERE u.candidate \
           ON CONFLICT (\"id\") DO UPDATE SET {set_cols}, raw = EXCLUDED.raw, raw_hash = EXCLUDED.raw_hash, \
             synced_at = EXCLUDED.synced_at, \
             deleted_at = CASE WHEN EXCLUDED.deleted_at IS NULL THEN NULL \
               ELSE COALESCE(t.deleted_at, EXCLUDED.deleted_at) END, \
             seen_sweep = COALESCE(EXCLUDED.seen_sweep, t.seen_sweep) \
           WHERE ((t.raw_hash IS DISTINCT FROM EXCLUDED.raw_hash AND t.raw IS DISTINCT FROM EXCLUDED.raw) \
             OR (t.deleted_at IS NULL) <> (EXCLUDED.deleted_at IS NULL)) AND {locked} \
           RETURNING t.\"id\", (t.xmax = 0) AS inserted), \
         rehash AS (UPDATE {table} AS t SET raw_hash = u.raw_hash FROM u \
           WHERE u.candidate AND t.\"id\" = u.\"id\" AND t.raw_hash IS DISTINCT FROM u.raw_hash \
             AND (t.deleted_at IS NULL) <> u.deleted AND t.raw = u.raw_text::jsonb), \
         seen AS MATERIALIZED (SELECT u.\"id\" FROM u \
           WHERE {sweep} IS NOT NULL AND u.stored_sweep IS DISTINCT FROM {sweep} \
             AND NOT (u.candidate AND u.\"id\" = ANY (ARRAY(SELECT \"id\" FROM up))) \
           UNION ALL SELECT x.\"id\" FROM UNNEST(${seen}::bigint[]) AS x(\"id\") WHERE {sweep} IS NOT NULL), \
         marks AS (INSERT INTO {marks} (kind, sweep, ids) SELECT {kind}, {sweep}, ARRAY(SELECT \"id\" FROM seen) \
           WHERE EXISTS (SELECT 1 FROM seen)), \
         pruned AS (DELETE FROM {marks} m WHERE m.kind = {kind} AND m.sweep < {sweep} \
           AND EXISTS (SELECT 1 FROM seen) \
           AND NOT EXISTS (SELECT 1 FROM {marks} c WHERE c.kind = {kind} AND c.sweep = {sweep})), \
         state AS (INSERT INTO {s}.sync_metadata (entity, cursor, last_full_sync_at, last_incremental_sync_at, \
             resume, row_count, updated_at) \
           SELECT ${st}::text, ${c}::timestamptz, ${f}::timestamptz, ${i}::timestamptz, ${r}::text, ${rc}::bigint, now() \
           WHERE ${st}::text IS NOT NULL \
           ON CONFLICT (entity) DO UPDATE SET cursor = EXCLUDED.cursor, \
             last_full_sync_at = EXCLUDED.last_full_sync_at, \
             last_incremental_sync_at = EXCLUDED.last_incremental_sync_at, resume = EXCLUDED.resume, \
             row_count = EXCLUDED.row_count, updated_at = EXCLUDED.updated_at)",
        select_cols = select_cols.join(", "),
        unnest = unnest_args.join(", "),
        set_cols = set_cols.join(", "),
        prefilter = not_older("s", "u"),
        locked = not_older("t", "EXCLUDED"),
        seen = p.seen(),
        c = st + 1,
        f = st + 2,
        i = st + 3,
        r = st + 4,
        rc = st + 5,
    );
    if t.name == "cards" {
        sql.push_str(&format!(
            ", links AS (SELECT l.card_id, l.tag_id \
               FROM UNNEST(${a}::bigint[], ${b}::bigint[]) AS l(card_id, tag_id) \
               WHERE l.card_id = ANY (ARRAY(SELECT \"id\" FROM up))), \
             gone AS (DELETE FROM {s}.card_tags c \
               WHERE c.card_id = ANY (ARRAY(SELECT \"id\" FROM up WHERE NOT inserted)) \
               AND (c.card_id, c.tag_id) NOT IN (SELECT card_id, tag_id FROM links)), \
             added AS (INSERT INTO {s}.card_tags (card_id, tag_id) SELECT card_id, tag_id FROM links \
               ON CONFLICT DO NOTHING), \
             listed AS MATERIALIZED (SELECT \"id\" FROM up WHERE \"id\" = ANY (${k}::bigint[])), \
             members AS (SELECT m.card_id, m.user_id, m.member_type \
               FROM UNNEST(${mc}::bigint[], ${mu}::bigint[], ${mt}::bigint[]) AS m(card_id, user_id, member_type) \
               WHERE m.card_id = ANY (ARRAY(SELECT \"id\" FROM listed))), \
             members_gone AS (DELETE FROM {s}.card_members c \
               WHERE c.card_id = ANY (ARRAY(SELECT \"id\" FROM listed)) \
               AND (c.card_id, c.user_id) NOT IN (SELECT card_id, user_id FROM members)), \
             members_added AS (INSERT INTO {s}.card_members AS c (card_id, user_id, \"type\") \
               SELECT card_id, user_id, member_type FROM members \
               ON CONFLICT (card_id, user_id) DO UPDATE SET \"type\" = EXCLUDED.\"type\" \
               WHERE c.\"type\" IS DISTINCT FROM EXCLUDED.\"type\")",
            a = p.tag_cards(),
            b = p.tag_ids(),
            k = p.member_lists(),
            mc = p.member_cards(),
            mu = p.member_users(),
            mt = p.member_types(),
        ));
    }
    sql.push_str(
        " SELECT \"id\", inserted FROM up UNION ALL SELECT u.\"id\", NULL::boolean FROM u WHERE NOT u.candidate",
    );
    let (write_page, function_name, function_ddl) = page_function(s, t, &sql, p);
    // Live rows the sweep neither wrote (`seen_sweep`) nor marked (`sweep_marks`). `NOT IN` is a
    // hashed subplan: the sweep's marks are read once through their index (ids are never NULL),
    // whatever the planner guesses of how many ids the arrays hold (an anti-join could become a
    // nested loop unnesting them again for every row).
    let unseen_base = format!(
        "SELECT t.\"id\" FROM {table} t WHERE t.deleted_at IS NULL AND t.seen_sweep IS DISTINCT FROM $1 \
         AND t.\"id\" NOT IN (SELECT x.\"id\" FROM {marks} m CROSS JOIN LATERAL UNNEST(m.ids) AS x(\"id\") \
           WHERE m.kind = {kind} AND m.sweep = $1)"
    );
    let scoped =
        t.scope_column.map(|c| format!("{unseen_base} AND t.{} = ANY($2::bigint[]) ORDER BY t.\"id\"", ident(c)));
    TableSql {
        write_page,
        function_name,
        function_ddl,
        get: format!("SELECT \"id\", {col_list}, raw, synced_at, deleted_at FROM {table} WHERE \"id\" = $1"),
        unseen_all: format!("{unseen_base} ORDER BY t.\"id\""),
        unseen_scoped: scoped,
        mark_deleted: format!(
            "UPDATE {table} SET deleted_at = $2 WHERE \"id\" = ANY($1::bigint[]) AND deleted_at IS NULL"
        ),
        existing: format!("SELECT \"id\" FROM {table} WHERE \"id\" = ANY($1::bigint[]) ORDER BY \"id\""),
        stored: format!(
            "SELECT \"id\", raw_hash, deleted_at IS NOT NULL, seen_sweep FROM {table} WHERE \"id\" = ANY($1::bigint[])"
        ),
        ids_all: format!("SELECT \"id\" FROM {table} ORDER BY \"id\""),
        ids_live: format!("SELECT \"id\" FROM {table} WHERE deleted_at IS NULL ORDER BY \"id\""),
    }
}

/// The page statement wrapped in a PL/pgSQL function, so that its plan is prepared once per
/// server session and cached, even through a transaction-mode pooler where the client cannot keep
/// named prepared statements (planning this statement costs about as much as running it). The
/// function also sets `synchronous_commit` for its caller's transaction when asked to.
///
/// The session keeps the plan it made at the first calls, possibly while the table was empty, when
/// scanning the whole table looks cheapest; reused while the table grows to 100,000 rows, such a
/// plan turns a first sync quadratic (measured: 13.7 s instead of 4.7 s for 100,000 cards written
/// after a `TRUNCATE`). The function therefore plans with sequential scans, hash and merge joins
/// off: every lookup goes through the primary key, whatever the table's size when it was planned.
///
/// The function's name ends with a digest of its definition (`write_page_cards_<16 hex>`): a
/// store never calls a body other than its own (a database not migrated by this version answers
/// "undefined function", which is [`StoreError::NotMigrated`](kaiten_sync::StoreError)), and
/// processes of two versions sharing a database each call their own.
///
/// Returns the call, the function's name and its `CREATE FUNCTION`.
fn page_function(s: &str, t: &TableDef, statement: &str, p: PageParams) -> (String, String, String) {
    let cards = t.name == "cards";
    let mut types = vec!["bigint[]"];
    types.extend(t.columns.iter().map(|c| array_type(c.ty)));
    types.extend(["text[]", "bigint[]", "boolean[]", "timestamptz", "bigint"]);
    types.extend(["text", "timestamptz", "timestamptz", "timestamptz", "text", "bigint", "boolean", "bigint[]"]);
    if cards {
        types.extend(["bigint[]", "bigint[]"]);
        types.extend(["bigint[]", "bigint[]", "bigint[]", "bigint[]"]);
    }
    debug_assert_eq!(types.len(), p.count(cards));
    let args: Vec<String> = types.iter().enumerate().map(|(i, ty)| format!("${}::{ty}", i + 1)).collect();
    let template = format!(
        "CREATE FUNCTION {s}.{NAME}({types}) RETURNS TABLE (row_id bigint, row_inserted boolean) \
         LANGUAGE plpgsql VOLATILE \
         {settings} \
         AS {BODY_QUOTE}\n\
         BEGIN\n\
         IF ${async_commit} THEN PERFORM pg_catalog.set_config('synchronous_commit', 'off', true); END IF;\n\
         RETURN QUERY {statement};\n\
         END\n\
         {BODY_QUOTE}",
        types = types.join(", "),
        settings = PLANNER_SETTINGS.iter().map(|(k, v)| format!("SET {k} = {v}")).collect::<Vec<_>>().join(" "),
        async_commit = p.async_commit(),
    );
    let name = format!("write_page_{}_{}", t.name, definition_hash(&template));
    let ddl = template.replace(NAME, &ident(&name));
    let call = format!("SELECT row_id, row_inserted FROM {s}.{}({})", ident(&name), args.join(", "));
    (call, name, ddl)
}

/// The planner settings every page function runs with (see [`page_function`]).
pub(crate) const PLANNER_SETTINGS: [(&str, &str); 3] =
    [("enable_seqscan", "off"), ("enable_hashjoin", "off"), ("enable_mergejoin", "off")];

/// Quotes a page function's body.
pub(crate) const BODY_QUOTE: &str = "$kaiten_page$";

/// Stands for the function's name in the definition its name is derived from.
const NAME: &str = "__kaiten_page_function__";

/// A 16-digit hex digest of a definition.
pub(crate) fn definition_hash(ddl: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(ddl.as_bytes())[..8].iter().map(|b| format!("{b:02x}")).collect()
}

fn counts_sql(s: &str) -> String {
    let mut parts: Vec<String> = TABLES
        .iter()
        .map(|t| {
            format!(
                "SELECT '{name}'::text, count(*) FILTER (WHERE deleted_at IS NULL), \
                 count(*) FILTER (WHERE deleted_at IS NOT NULL) FROM {s}.{q}",
                name = t.name,
                q = ident(t.name)
            )
        })
        .collect();
    parts.push(format!("SELECT 'card_tags'::text, count(*), 0::bigint FROM {s}.card_tags"));
    parts.push(format!("SELECT 'card_members'::text, count(*), 0::bigint FROM {s}.card_members"));
    parts.join(" UNION ALL ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upsert_has_one_parameter_per_array_and_the_version_rule_for_cards() {
        let st = Statements::new("\"kaiten\"");
        let cards = st.table(EntityKind::Cards);
        let p = PageParams { n: EntityKind::Cards.table().columns.len() };
        for i in 1..=p.count(true) {
            assert!(cards.function_ddl.contains(&format!("${i}")), "${i} missing");
            assert!(cards.write_page.contains(&format!("${i}::")), "${i} missing");
        }
        assert!(!cards.write_page.contains(&format!("${}", p.count(true) + 1)));
        assert!(cards.function_ddl.contains("card_members"));
        assert!(cards.function_ddl.contains("EXCLUDED.\"version\" < t.\"version\""));
        assert!(cards.function_ddl.contains("u.\"version\" < s.\"version\""));
        assert!(!st.table(EntityKind::Boards).function_ddl.contains("version"));
        let tags = PageParams { n: EntityKind::Tags.table().columns.len() };
        let tags_sql = st.table(EntityKind::Tags);
        assert!(tags_sql.function_ddl.contains(&format!("${}::bigint", tags.state() + 5)));
        assert!(tags_sql.write_page.contains(&format!("${}::boolean, ", tags.async_commit())));
        assert!(tags_sql.write_page.contains(&format!("${}::bigint[])", tags.seen())));
        assert!(!tags_sql.write_page.contains(&format!("${}", tags.tag_cards())));
        assert!(!tags_sql.function_ddl.contains("card_members"));
        assert!(st.counts.contains("\"kaiten\".card_members"));
        assert!(st.table(EntityKind::Spaces).unseen_scoped.is_none());
        // Unchanged rows of a sweep are marked beside the table, never rewritten.
        assert!(cards.function_ddl.contains("INSERT INTO \"kaiten\".sweep_marks (kind, sweep, ids) SELECT 'cards'"));
        assert!(!cards.function_ddl.contains("SET seen_sweep ="));
        assert!(cards.unseen_all.contains("WHERE m.kind = 'cards' AND m.sweep = $1"));
        assert!(st.table(EntityKind::Boards).unseen_scoped.as_deref().is_some_and(|q| q.contains("sweep_marks")));
        assert!(st.counts.contains("\"kaiten\".\"property_select_values\""));
    }
}
