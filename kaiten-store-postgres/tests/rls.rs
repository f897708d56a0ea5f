//! Supabase: with the `anon` role present, `migrate` enables row-level security on every table of
//! the schema, without policies, so the Data API's `anon` and `authenticated` roles read nothing
//! while the owner (the sync) reads and writes everything.

mod common;

use std::sync::Arc;

use common::{server, unique_name, DatabaseGuard};
use kaiten_sim::{SimConfig, Simulator};
use kaiten_store_postgres::{PgStore, PgStoreOptions, RowLevelSecurity};
use kaiten_sync::kaiten_client::KaitenClient;
use kaiten_sync::{Store, SyncEngine};
use sqlx::{Connection, Executor, PgConnection, Row};

/// Supabase's API roles. Roles are cluster-wide: created when missing (NOLOGIN, as Supabase has
/// them), and only those created here are dropped afterwards.
const API_ROLES: [&str; 2] = ["anon", "authenticated"];

/// Drops, when dropped, the roles (cluster-wide) a test created. Declare it before the
/// [`DatabaseGuard`] of the database holding their privileges, so that database goes first.
struct RolesGuard {
    url: String,
    roles: Vec<String>,
}

impl Drop for RolesGuard {
    fn drop(&mut self) {
        if self.roles.is_empty() {
            return;
        }
        let (url, roles) = (self.url.clone(), std::mem::take(&mut self.roles));
        let cleanup = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(async move {
                let Ok(mut conn) = PgConnection::connect(&url).await else { return };
                for role in roles {
                    let _ = conn.execute(format!("DROP ROLE IF EXISTS \"{role}\"").as_str()).await;
                }
                let _ = conn.close().await;
            });
        });
        let _ = cleanup.join();
    }
}

async fn create_missing_roles(conn: &mut PgConnection) -> Vec<String> {
    let mut created = Vec::new();
    for role in API_ROLES {
        let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
            .bind(role)
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        if exists {
            continue;
        }
        // Another test process may create it at the same moment: that is fine too.
        match conn.execute(format!("CREATE ROLE {role} NOLOGIN").as_str()).await {
            Ok(_) => created.push(role.to_owned()),
            Err(e) if e.to_string().contains("already exists") => {}
            Err(e) => panic!("create role {role}: {e}"),
        }
    }
    created
}

async fn tables(conn: &mut PgConnection, schema: &str) -> Vec<(String, bool)> {
    sqlx::query(
        "SELECT c.relname::text, c.relrowsecurity FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') ORDER BY 1",
    )
    .bind(schema)
    .fetch_all(&mut *conn)
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

/// Rows of every table as the current role sees them.
async fn row_counts(conn: &mut PgConnection, schema: &str, tables: &[(String, bool)]) -> Vec<(String, i64)> {
    let mut counts = Vec::new();
    for (table, _) in tables {
        let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM \"{schema}\".\"{table}\""))
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        counts.push((table.clone(), n));
    }
    counts
}

#[tokio::test]
async fn with_supabase_roles_migrate_enables_rls_and_the_api_roles_read_nothing() {
    let Some(url) = server().await else { return };
    let mut roles = RolesGuard { url: url.clone(), roles: Vec::new() };
    {
        let mut conn = PgConnection::connect(&url).await.unwrap();
        roles.roles = create_missing_roles(&mut conn).await;
        let _ = conn.close().await;
    }
    let db = DatabaseGuard::create(&url).await;
    let mut admin = PgConnection::connect(&db.url).await.unwrap();
    let schema = "kaiten";
    {
        let sim = Simulator::start(SimConfig::small()).await.unwrap();
        let client =
            KaitenClient::builder().base_url(sim.base_url()).token(sim.token()).rate_limit(None).build().unwrap();
        let store = PgStore::connect_with(PgStoreOptions { schema: schema.into(), ..PgStoreOptions::new(&db.url) })
            .await
            .unwrap();
        // Several processes migrating at once, then again: all succeed, and agree.
        let migrations = (0..3).map(|_| {
            let store = store.clone();
            async move { store.migrate().await }
        });
        for result in futures_join(migrations).await {
            result.expect("concurrent migrations");
        }
        store.migrate().await.expect("migrate again");

        // Supabase grants its API roles everything on exposed schemas.
        admin
            .execute(
                format!(
                    "GRANT USAGE ON SCHEMA {schema} TO anon, authenticated; \
                     GRANT ALL ON ALL TABLES IN SCHEMA {schema} TO anon, authenticated"
                )
                .as_str(),
            )
            .await
            .unwrap();

        let store: Arc<dyn Store> = Arc::new(store);
        let engine = SyncEngine::new(client, store.clone());
        engine.sync_all().await.expect("a full sync writes through row-level security");

        let all = tables(&mut admin, schema).await;
        assert!(all.len() >= 14, "{all:?}");
        for (table, rls) in &all {
            assert!(*rls, "row-level security on {schema}.{table}");
        }
        for expected in
            ["cards", "card_tags", "card_members", "sync_metadata", "sync_logs", "webhook_inbox", "schema_migrations"]
        {
            assert!(all.iter().any(|(t, _)| t == expected), "{expected} in {all:?}");
        }
        let policies: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_policies WHERE schemaname = $1")
            .bind(schema)
            .fetch_one(&mut admin)
            .await
            .unwrap();
        assert_eq!(policies, 0, "no policy: nothing is opened to the API roles");

        let owner = row_counts(&mut admin, schema, &all).await;
        for table in ["cards", "boards", "spaces", "users", "sync_metadata", "sync_logs", "schema_migrations"] {
            let n = owner.iter().find(|(t, _)| t == table).unwrap().1;
            assert!(n > 0, "the owner reads {table}: {owner:?}");
        }
        for role in API_ROLES {
            admin.execute(format!("SET ROLE {role}").as_str()).await.unwrap();
            let seen = row_counts(&mut admin, schema, &all).await;
            assert!(seen.iter().all(|(_, n)| *n == 0), "{role} reads nothing: {seen:?}");
            let write = admin
                .execute(format!("INSERT INTO {schema}.tags (id, raw, synced_at) VALUES (-1, '{{}}', now())").as_str())
                .await;
            let err = write.expect_err("the API roles write nothing").to_string();
            assert!(err.contains("row-level security"), "{err}");
            admin.execute("RESET ROLE").await.unwrap();
        }

        // The sync still writes: a new card arrives with an incremental run.
        let board = sim.board_ids()[0];
        let card = sim.create_card(board, "After row-level security");
        engine.sync_incremental().await.expect("incremental sync");
        let id = card["id"].as_i64().unwrap();
        let stored: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {schema}.cards WHERE id = $1"))
            .bind(id)
            .fetch_one(&mut admin)
            .await
            .unwrap();
        assert_eq!(stored, 1);
        admin.execute("SET ROLE anon").await.unwrap();
        let seen: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {schema}.cards WHERE id = $1"))
            .bind(id)
            .fetch_one(&mut admin)
            .await
            .unwrap();
        assert_eq!(seen, 0);
        admin.execute("RESET ROLE").await.unwrap();

        // `Leave` never turns it off, and a schema migrated with `Leave` gets none.
        let other = unique_name("kaiten_test");
        let leave = PgStore::connect_with(PgStoreOptions {
            schema: other.clone(),
            row_level_security: RowLevelSecurity::Leave,
            ..PgStoreOptions::new(&db.url)
        })
        .await
        .unwrap();
        leave.migrate().await.unwrap();
        assert!(tables(&mut admin, &other).await.iter().all(|(_, rls)| !rls));
        let same = PgStore::connect_with(PgStoreOptions {
            schema: schema.into(),
            row_level_security: RowLevelSecurity::Leave,
            ..PgStoreOptions::new(&db.url)
        })
        .await
        .unwrap();
        same.migrate().await.unwrap();
        assert!(tables(&mut admin, schema).await.iter().all(|(_, rls)| *rls));
    }
    let _ = admin.close().await;
    drop(db);
    drop(roles);
}

/// `futures::future::join_all` without the dependency.
async fn futures_join<F: std::future::Future + Send + 'static>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for handle in handles {
        out.push(handle.await.unwrap());
    }
    out
}

#[tokio::test]
async fn enable_is_refused_on_tables_the_migrating_role_does_not_own() {
    let Some(url) = server().await else { return };
    let role = unique_name("kaiten_rls_role");
    let roles = RolesGuard { url: url.clone(), roles: vec![role.clone()] };
    let db = DatabaseGuard::create(&url).await;
    let mut admin = PgConnection::connect(&db.url).await.unwrap();
    let schema = "kaiten";
    // The owner migrates without row-level security, then a role with grants only migrates asking for it.
    PgStore::connect_with(PgStoreOptions {
        schema: schema.into(),
        row_level_security: RowLevelSecurity::Leave,
        ..PgStoreOptions::new(&db.url)
    })
    .await
    .unwrap()
    .migrate()
    .await
    .unwrap();
    admin.execute(format!("CREATE ROLE \"{role}\" LOGIN PASSWORD 'rlsrole123'").as_str()).await.unwrap();
    {
        admin
            .execute(
                format!(
                    "GRANT USAGE ON SCHEMA {schema} TO \"{role}\"; \
                     GRANT ALL ON ALL TABLES IN SCHEMA {schema} TO \"{role}\"; \
                     GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA {schema} TO \"{role}\""
                )
                .as_str(),
            )
            .await
            .unwrap();
        let opts: sqlx::postgres::PgConnectOptions = db.url.parse().unwrap();
        let role_url = format!(
            "postgres://{role}:rlsrole123@{}:{}/{}",
            opts.get_host(),
            opts.get_port(),
            opts.get_database().unwrap()
        );
        let store = PgStore::connect_with(PgStoreOptions {
            schema: schema.into(),
            row_level_security: RowLevelSecurity::Enable,
            ..PgStoreOptions::new(&role_url)
        })
        .await
        .unwrap();
        let err = store.migrate().await.expect_err("not the owner").to_string();
        assert!(err.contains("row-level security not enabled") && err.contains("owner"), "{err}");
        assert!(!err.contains("rlsrole123"), "{err}");
        assert!(tables(&mut admin, schema).await.iter().all(|(_, rls)| !rls), "nothing half-done");
    }
    let _ = admin.close().await;
    drop(db);
    drop(roles);
}
