//! Embedded migrations and their runner.
//!
//! Each migration is a SQL file under `migrations/`, compiled into the crate, with `{schema}`
//! standing for the (quoted) schema name. `migrate()` applies the missing ones (those whose version
//! is not recorded, in ascending order; versions may skip numbers) in one transaction
//! under `pg_advisory_xact_lock`, so two processes migrating at once take turns and a failure
//! leaves nothing half-applied. Applied versions are recorded in `<schema>.schema_migrations`.

use kaiten_sync::StoreError;
use sqlx::{Executor, Postgres, Row, Transaction};

use crate::error::{query_error, Ctx, Secrets};
use crate::sql::{definition_hash, ident, BODY_QUOTE, PLANNER_SETTINGS};
use crate::RowLevelSecurity;

/// One embedded migration.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Version, increasing from 1.
    pub version: i64,
    /// Short description, stored in `schema_migrations`.
    pub description: &'static str,
    /// The SQL, with `{schema}` placeholders.
    pub sql: &'static str,
}

/// Every migration this version of the crate knows, in order.
pub static MIGRATIONS: &[Migration] = &[
    Migration { version: 1, description: "initial schema", sql: include_str!("../migrations/0001_initial.sql") },
    Migration { version: 2, description: "users' role", sql: include_str!("../migrations/0002_users_role.sql") },
    Migration { version: 3, description: "card members", sql: include_str!("../migrations/0003_card_members.sql") },
    Migration { version: 4, description: "webhook inbox", sql: include_str!("../migrations/0004_webhook_inbox.sql") },
    Migration { version: 5, description: "sweep marks", sql: include_str!("../migrations/0005_sweep_marks.sql") },
];

/// A relationship enforced as a foreign key: `(constraint, table, column, referenced table)`.
pub type ForeignKey = (&'static str, &'static str, &'static str, &'static str);

/// The relationships [`PgStoreOptions::foreign_keys`](crate::PgStoreOptions::foreign_keys) turns
/// into `DEFERRABLE INITIALLY DEFERRED` foreign keys (each referencing the parent's `id`): those
/// the engine guarantees in every kind of run. A card's board, column and lane are fetched (or
/// stored as placeholders) before the card; subcolumns follow their column in the same listing.
/// (`card_tags` rows are written by the statement that writes their card: a constraint there
/// would only cost time.)
///
/// Not (yet) constraints: board → space and column/lane → board. A selective sync of boards (or
/// of columns and lanes) writes them without their space (or board) when that parent was never
/// synced, so such a constraint would fail a legitimate sync.
pub static FOREIGN_KEYS: &[ForeignKey] = &[
    ("cards_board_id_fkey", "cards", "board_id", "boards"),
    ("cards_column_id_fkey", "cards", "column_id", "columns"),
    ("cards_lane_id_fkey", "cards", "lane_id", "lanes"),
    ("columns_parent_column_id_fkey", "columns", "parent_column_id", "columns"),
    ("boards_space_id_fkey", "boards", "space_id", "spaces"),
    ("columns_board_id_fkey", "columns", "board_id", "boards"),
    ("lanes_board_id_fkey", "lanes", "board_id", "boards"),
    (
        "property_select_values_custom_property_id_fkey",
        "property_select_values",
        "custom_property_id",
        "property_definitions",
    ),
];

/// The newest schema version this crate knows.
pub fn latest_version() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// The SQL of a migration for a schema (`qschema` is the quoted name).
pub(crate) fn render(migration: &Migration, qschema: &str) -> String {
    migration.sql.replace("{schema}", qschema)
}

/// What a migration works on.
pub(crate) struct Target<'a> {
    /// The bare (validated) schema name.
    pub(crate) schema: &'a str,
    /// The quoted schema name.
    pub(crate) qschema: &'a str,
    /// The advisory lock serializing migrations of this schema.
    pub(crate) lock_key: i64,
    /// Whether statements are prepared by name.
    pub(crate) persistent: bool,
    /// Whether the relationships are foreign keys.
    pub(crate) foreign_keys: bool,
    /// Whether row-level security is enabled on every table.
    pub(crate) row_level_security: RowLevelSecurity,
    /// The page functions: `(name, CREATE FUNCTION)`.
    pub(crate) functions: Vec<(&'a str, &'a str)>,
    pub(crate) secrets: &'a Secrets,
}

/// Applies the missing migrations, then brings foreign keys and page functions in line.
pub(crate) async fn run(mut tx: Transaction<'static, Postgres>, target: Target<'_>) -> Result<(), StoreError> {
    let Target { schema, qschema, lock_key, persistent, foreign_keys, row_level_security, ref functions, secrets } =
        target;
    let err = |what: &'static str| move |e: sqlx::Error| schema_error(e, what, schema, secrets);
    // Serializes concurrent migrations of this schema; released at commit or rollback.
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .persistent(persistent)
        .bind(lock_key)
        .execute(&mut *tx)
        .await
        .map_err(err("take the migration lock"))?;

    // Only create what is missing: CREATE ... IF NOT EXISTS checks privileges before existence,
    // and a user of a schema prepared by an administrator may not have CREATE.
    let schema_exists: bool = sqlx::query("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
        .persistent(persistent)
        .bind(schema)
        .fetch_one(&mut *tx)
        .await
        .map_err(err("look up the schema"))?
        .get(0);
    if !schema_exists {
        (&mut *tx).execute(format!("CREATE SCHEMA {qschema}").as_str()).await.map_err(err("create the schema"))?;
    }
    let table_exists: bool = sqlx::query("SELECT to_regclass($1) IS NOT NULL")
        .persistent(persistent)
        .bind(format!("{qschema}.schema_migrations"))
        .fetch_one(&mut *tx)
        .await
        .map_err(err("look up schema_migrations"))?
        .get(0);
    if !table_exists {
        let create = format!(
            "CREATE TABLE {qschema}.schema_migrations (version bigint PRIMARY KEY, description text NOT NULL, \
             applied_at timestamptz NOT NULL DEFAULT now())"
        );
        (&mut *tx).execute(create.as_str()).await.map_err(err("create schema_migrations"))?;
    }
    let current: i64 = sqlx::query(&format!("SELECT COALESCE(max(version), 0) FROM {qschema}.schema_migrations"))
        .persistent(persistent)
        .fetch_one(&mut *tx)
        .await
        .map_err(err("read schema_migrations"))?
        .get(0);
    let latest = latest_version();
    if current > latest {
        return Err(StoreError::schema(format!(
            "schema {schema} is at version {current}, which is newer than this kaiten-sync knows ({latest}): \
             upgrade kaiten-sync"
        )));
    }
    // Missing means not recorded, whatever the highest recorded version: versions need not be
    // contiguous, and one that arrives after a higher one was applied (branches merged in another
    // order) is still applied, in ascending order with the others.
    let applied: Vec<i64> = sqlx::query(&format!("SELECT version FROM {qschema}.schema_migrations"))
        .persistent(persistent)
        .fetch_all(&mut *tx)
        .await
        .map_err(err("read schema_migrations"))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for migration in MIGRATIONS.iter().filter(|m| !applied.contains(&m.version)) {
        tracing::info!(schema, version = migration.version, "applying migration: {}", migration.description);
        let sql = render(migration, qschema);
        (&mut *tx).execute(sql.as_str()).await.map_err(|e| {
            schema_error(
                e,
                &format!("apply migration {} ({})", migration.version, migration.description),
                schema,
                secrets,
            )
        })?;
        sqlx::query(&format!("INSERT INTO {qschema}.schema_migrations (version, description) VALUES ($1, $2)"))
            .persistent(persistent)
            .bind(migration.version)
            .bind(migration.description)
            .execute(&mut *tx)
            .await
            .map_err(err("record the migration"))?;
    }

    // Foreign keys follow the option: added when on (validated when the data allows, otherwise
    // kept NOT VALID so that existing rows do not block new ones), dropped when off.
    let present: Vec<String> = sqlx::query(
        "SELECT c.conname::text FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace \
         WHERE n.nspname = $1 AND c.contype = 'f'",
    )
    .persistent(persistent)
    .bind(schema)
    .fetch_all(&mut *tx)
    .await
    .map_err(err("list foreign keys"))?
    .iter()
    .map(|r| r.get(0))
    .collect();
    for &(name, table, column, parent) in FOREIGN_KEYS {
        let exists = present.iter().any(|p| p == name);
        if foreign_keys && !exists {
            let add = format!(
                "ALTER TABLE {qschema}.{t} ADD CONSTRAINT {name} FOREIGN KEY ({c}) REFERENCES {qschema}.{p} (id) \
                 DEFERRABLE INITIALLY DEFERRED NOT VALID",
                t = ident(table),
                c = ident(column),
                p = ident(parent),
            );
            (&mut *tx).execute(add.as_str()).await.map_err(err("add a foreign key"))?;
            let validate =
                format!("SAVEPOINT kaiten_fk; ALTER TABLE {qschema}.{t} VALIDATE CONSTRAINT {name}", t = ident(table));
            match (&mut *tx).execute(validate.as_str()).await {
                Ok(_) => (&mut *tx).execute("RELEASE SAVEPOINT kaiten_fk").await,
                Err(e) => {
                    tracing::warn!(
                        schema,
                        constraint = name,
                        "existing rows break {table}.{column} -> {parent}: the foreign key checks new rows only \
                         ({e})"
                    );
                    (&mut *tx).execute("ROLLBACK TO SAVEPOINT kaiten_fk; RELEASE SAVEPOINT kaiten_fk").await
                }
            }
            .map_err(err("validate a foreign key"))?;
        } else if !foreign_keys && exists {
            let drop = format!("ALTER TABLE {qschema}.{t} DROP CONSTRAINT {name}", t = ident(table));
            (&mut *tx).execute(drop.as_str()).await.map_err(err("drop a foreign key"))?;
        }
    }

    install_functions(&mut tx, schema, qschema, persistent, functions).await.map_err(err("install page functions"))?;
    enable_row_level_security(&mut tx, schema, persistent, row_level_security, secrets).await?;
    tx.commit().await.map_err(err("commit the migration"))?;
    Ok(())
}

/// Enables row-level security on every table of the schema that does not have it yet, when
/// `mode` asks (for [`RowLevelSecurity::Auto`]: when a role named `anon` exists). Runs in the
/// migration's transaction, under its lock: concurrent and repeated migrations agree, and a table
/// that has it already is not touched (no `ALTER TABLE`, no lock).
async fn enable_row_level_security(
    tx: &mut Transaction<'static, Postgres>,
    schema: &str,
    persistent: bool,
    mode: RowLevelSecurity,
    secrets: &Secrets,
) -> Result<(), StoreError> {
    let err = |what: &'static str| move |e: sqlx::Error| schema_error(e, what, schema, secrets);
    let wanted = match mode {
        RowLevelSecurity::Leave => false,
        RowLevelSecurity::Enable => true,
        RowLevelSecurity::Auto => sqlx::query("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'anon')")
            .persistent(persistent)
            .fetch_one(&mut **tx)
            .await
            .map_err(err("look for the anon role"))?
            .get(0),
    };
    if !wanted {
        return Ok(());
    }
    // Tables (plain and partitioned) of the schema without row-level security, and whether the
    // migrating role would still reach their rows: as their owner (not FORCE'd) or bypassing RLS.
    let tables: Vec<(String, bool)> = sqlx::query(
        "SELECT c.relname::text,                 (pg_get_userbyid(c.relowner) = current_user AND NOT c.relforcerowsecurity)                 OR EXISTS (SELECT 1 FROM pg_roles r WHERE r.rolname = current_user AND (r.rolsuper OR r.rolbypassrls))          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace          WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND NOT c.relrowsecurity          ORDER BY c.relname",
    )
    .persistent(persistent)
    .bind(schema)
    .fetch_all(&mut **tx)
    .await
    .map_err(err("list tables without row-level security"))?
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect();
    let blocked: Vec<&str> = tables.iter().filter(|(_, reaches)| !reaches).map(|(t, _)| t.as_str()).collect();
    if !blocked.is_empty() {
        let message = format!(
            "row-level security not enabled on {schema}.{}: the role migrating is not their owner (and has no              BYPASSRLS), so with it the sync could no longer write them; run `migrate` as the tables' owner",
            blocked.join(", ")
        );
        if mode == RowLevelSecurity::Enable {
            return Err(StoreError::schema(message));
        }
        tracing::warn!(schema, "{message}");
    }
    for (table, _) in tables.iter().filter(|(_, reaches)| *reaches) {
        let alter = format!("ALTER TABLE {}.{} ENABLE ROW LEVEL SECURITY", ident(schema), ident(table));
        (&mut **tx).execute(alter.as_str()).await.map_err(err("enable row-level security"))?;
    }
    if !tables.is_empty() {
        tracing::info!(schema, tables = tables.len() - blocked.len(), "enabled row-level security (no policies)");
    }
    Ok(())
}

/// A page function found in the schema.
struct Installed {
    name: String,
    signature: String,
    comment: Option<String>,
    body: String,
    config: String,
}

/// (Re)creates the page functions (`(name, CREATE FUNCTION)`) that are missing or were changed by
/// hand (body, settings or the comment carrying the hash of their definition); an intact one is
/// left alone (and keeps the plans cached by running sessions). Other versions' functions (other
/// digests in the name) are left too: a process of that version may still be running, and they
/// go with the schema.
async fn install_functions(
    tx: &mut Transaction<'static, Postgres>,
    schema: &str,
    qschema: &str,
    persistent: bool,
    functions: &[(&str, &str)],
) -> Result<(), sqlx::Error> {
    let installed: Vec<Installed> = sqlx::query(
        "SELECT p.proname::text, p.oid::regprocedure::text, obj_description(p.oid, 'pg_proc'), p.prosrc, \
         coalesce(array_to_string(p.proconfig, ','), '') \
         FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
         WHERE n.nspname = $1 AND p.proname LIKE 'write\\_page\\_%'",
    )
    .persistent(persistent)
    .bind(schema)
    .fetch_all(&mut **tx)
    .await?
    .iter()
    .map(|r| Installed { name: r.get(0), signature: r.get(1), comment: r.get(2), body: r.get(3), config: r.get(4) })
    .collect();
    let config = PLANNER_SETTINGS.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",");
    for &(name, ddl) in functions {
        let tag = format!("kaiten-sync page writer {}", definition_hash(ddl));
        let body = ddl.split(BODY_QUOTE).nth(1).unwrap_or_default();
        let same = installed.iter().filter(|f| f.name == name).collect::<Vec<_>>();
        if let [f] = same.as_slice() {
            if f.comment.as_deref() == Some(tag.as_str()) && f.body == body && f.config == config {
                continue;
            }
        }
        for f in &same {
            (&mut **tx).execute(format!("DROP FUNCTION {}", f.signature).as_str()).await?;
        }
        (&mut **tx).execute(ddl).await?;
        let comment = format!("COMMENT ON FUNCTION {qschema}.{} IS '{tag}'", ident(name));
        (&mut **tx).execute(comment.as_str()).await?;
    }
    Ok(())
}

/// Migration errors: permissions stay [`StoreError::Permission`], connection problems stay
/// [`StoreError::Unavailable`], the rest is a [`StoreError::Schema`] naming the step.
fn schema_error(e: sqlx::Error, what: &str, schema: &str, secrets: &Secrets) -> StoreError {
    let what = format!("migrating schema {schema}: {what}");
    match query_error(e, Ctx::new(&what), secrets) {
        err @ (StoreError::Permission { .. } | StoreError::Unavailable { .. } | StoreError::Busy { .. }) => err,
        StoreError::NotMigrated => StoreError::schema(format!("{what}: a table or column is missing")),
        StoreError::Backend { message, source, .. } => StoreError::Schema { message, source },
        other => StoreError::Schema { message: what, source: Some(Box::new(other)) },
    }
}
