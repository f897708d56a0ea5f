//! Postgres-specific behaviour: the user's queries, bad input, migrations, the advisory lock,
//! poolers (no named prepared statements), foreign keys, TLS.

mod common;

use std::time::Duration;

use common::{pg_store, pg_store_with, server, uses_tls, with_param, DatabaseGuard, SchemaGuard};
use kaiten_store_postgres::{migrate, LockMode, PgStore, PgStoreOptions};
use kaiten_sync::error::chain;
use kaiten_sync::schema::{ColumnType, TABLES};
use kaiten_sync::{Batch, EntityKind, EntityState, LockAttempt, Page, PageOutcome, Store, StoreError};
use kaiten_sync_testkit::fixtures::{board, card, card_json, cards, column, lane, space};
use sqlx::{Connection, Executor, PgConnection, Row};

fn page(batch: Batch) -> Page {
    Page { batch, sweep: None, state: None, synced_at: kaiten_sync_testkit::fixtures::epoch() }
}

/// A board with its space, column 1001 and lane 1050 (what `fixtures::cards(.., 10, ..)` points to).
async fn parents(store: &dyn Store) {
    store.apply_page(&page(Batch::Spaces(vec![space(1)]))).await.unwrap();
    store.apply_page(&page(Batch::Boards(vec![board(10, 1)]))).await.unwrap();
    store.apply_page(&page(Batch::Columns(vec![column(1001, 10, None)]))).await.unwrap();
    store.apply_page(&page(Batch::Lanes(vec![lane(1050, 10)]))).await.unwrap();
}

#[tokio::test]
async fn users_queries_work_as_written_in_the_default_schema() {
    let Some(url) = server().await else { return };
    let db = DatabaseGuard::create(&url).await;
    let store = PgStore::connect(&db.url).await.expect("connect");
    assert_eq!(store.schema(), "kaiten");
    store.migrate().await.expect("migrate");
    parents(&store).await;
    let mut p = page(Batch::Cards(cards(1, 25, 10, 100)));
    for (i, first) in [1, 26].into_iter().enumerate() {
        p.batch = Batch::Cards(cards(first, 25, 10, 100));
        p.synced_at = kaiten_sync_testkit::fixtures::epoch() + chrono::Duration::seconds(i as i64);
        store.apply_page(&p).await.unwrap();
    }

    let mut conn = PgConnection::connect(&db.url).await.unwrap();
    let rows = sqlx::query("SELECT id, title, synced_at FROM kaiten.cards ORDER BY synced_at DESC LIMIT 10;")
        .fetch_all(&mut conn)
        .await
        .expect("the user's first query works as written");
    assert_eq!(rows.len(), 10);
    let first: i64 = rows[0].get("id");
    assert!((26..=50).contains(&first), "newest sync first, got card {first}");
    let title: String = rows[0].get("title");
    assert_eq!(title, format!("Card {first}"));
    let _: chrono::DateTime<chrono::Utc> = rows[0].get("synced_at");

    let rows = sqlx::query(
        "SELECT 'cards', COUNT(*) FROM kaiten.cards UNION ALL SELECT 'boards', COUNT(*) FROM kaiten.boards \
         UNION ALL SELECT 'spaces', COUNT(*) FROM kaiten.spaces;",
    )
    .fetch_all(&mut conn)
    .await
    .expect("the user's count query works as written");
    let counts: Vec<(String, i64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(counts, vec![("cards".into(), 50), ("boards".into(), 1), ("spaces".into(), 1)]);

    // jsonb and timestamptz are queryable as such.
    let title: String =
        sqlx::query_scalar("SELECT raw->>'title' FROM kaiten.cards WHERE properties ? 'id_1' AND id = 3")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(title, "Card 3");
    let typ: String = sqlx::query_scalar("SELECT pg_typeof(updated)::text FROM kaiten.cards LIMIT 1")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(typ, "timestamp with time zone");
    conn.close().await.unwrap();
    store.close().await;
}

#[tokio::test]
async fn unreachable_server_is_a_clear_error_without_the_password() {
    let options = PgStoreOptions {
        connect_timeout: Duration::from_secs(3),
        ..PgStoreOptions::new("postgres://kaiten:s3cretpassw0rd@127.0.0.1:1/test")
    };
    let err = PgStore::connect_with(options).await.expect_err("nothing listens on port 1");
    let text = err.to_string();
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
    assert!(text.contains("127.0.0.1:1") && text.contains("connection refused"), "{text}");
    assert!(text.contains("kaiten:***@"), "{text}");
    assert!(!text.contains("s3cretpassw0rd") && !format!("{err:?}").contains("s3cretpassw0rd"), "{err:?}");
    let mut source = std::error::Error::source(&err);
    while let Some(s) = source {
        assert!(!s.to_string().contains("s3cretpassw0rd"));
        source = s.source();
    }
}

#[tokio::test]
async fn bad_urls_and_schema_names_are_clear_errors() {
    let err = PgStore::connect("mysql://u:pw12345@h/db").await.expect_err("not a postgres URL");
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
    assert!(!chain(&err).contains("pw12345"), "{}", chain(&err));
    let err = PgStore::connect("").await.expect_err("empty");
    assert!(err.to_string().contains("no database URL"), "{err}");
    let err = PgStore::connect_with(PgStoreOptions {
        schema: "Kaiten; DROP".into(),
        ..PgStoreOptions::new("postgres://u@127.0.0.1:1/db")
    })
    .await
    .expect_err("bad schema name");
    assert!(matches!(&err, StoreError::Schema { message: m, .. } if m.contains("invalid schema name")), "{err:?}");
}

#[tokio::test]
async fn unknown_user_is_a_clear_error_without_the_password() {
    let Some(url) = server().await else { return };
    let opts: sqlx::postgres::PgConnectOptions = url.parse().unwrap();
    let bad = format!(
        "postgres://nosuch_kaiten_user:hunter2hunter2@{}:{}/{}",
        opts.get_host(),
        opts.get_port(),
        opts.get_database().unwrap_or("postgres")
    );
    let err = PgStore::connect(&bad).await.expect_err("no such role");
    let text = err.to_string();
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
    assert!(text.contains("nosuch_kaiten_user") && text.contains("authentication failed"), "{text}");
    assert!(!chain(&err).contains("hunter2hunter2") && !format!("{err:?}").contains("hunter2hunter2"), "{err:?}");

    let missing_db = common::with_database(&url, "kaiten_no_such_database");
    let err = PgStore::connect(&missing_db).await.expect_err("no such database");
    assert!(err.to_string().contains("kaiten_no_such_database"), "{err}");
}

#[tokio::test]
async fn debug_never_prints_the_password() {
    let Some(url) = server().await else { return };
    // The test server trusts local connections, so any password is accepted (and must be hidden).
    let opts: sqlx::postgres::PgConnectOptions = url.parse().unwrap();
    let with_password = format!(
        "postgres://{}:topsecret99@{}:{}/{}",
        opts.get_username(),
        opts.get_host(),
        opts.get_port(),
        opts.get_database().unwrap_or("postgres")
    );
    let store = PgStore::connect(&with_password).await.expect("trust auth ignores the password");
    let text = format!("{store:?}");
    assert!(!text.contains("topsecret99") && text.contains(":***@"), "{text}");
    store.close().await;
}

#[tokio::test]
async fn schema_owned_by_another_role_is_a_permission_error() {
    let Some(url) = server().await else { return };
    let guard = SchemaGuard::new(&url);
    let role = common::unique_name("kaiten_test_role");
    let mut admin = PgConnection::connect(&url).await.unwrap();
    admin.execute(format!("CREATE SCHEMA \"{}\"", guard.schema).as_str()).await.unwrap();
    admin.execute(format!("CREATE ROLE \"{role}\" LOGIN PASSWORD 'rolepass123'").as_str()).await.unwrap();

    let opts: sqlx::postgres::PgConnectOptions = url.parse().unwrap();
    let role_url = with_param(
        &format!(
            "postgres://{role}:rolepass123@{}:{}/{}",
            opts.get_host(),
            opts.get_port(),
            opts.get_database().unwrap_or("postgres")
        ),
        "application_name",
        &guard.app,
    );
    let result = async {
        let store =
            PgStore::connect_with(PgStoreOptions { schema: guard.schema.clone(), ..PgStoreOptions::new(&role_url) })
                .await
                .expect("the role may connect");
        let err = store.migrate().await.expect_err("the role may not create tables in the schema");
        let text = err.to_string();
        assert!(matches!(err, StoreError::Permission { .. }), "{err:?}");
        assert!(text.contains(&guard.schema) && text.contains("permission denied"), "{text}");
        assert!(!chain(&err).contains("rolepass123"), "{}", chain(&err));
        // Nothing half-written: the schema is still empty.
        let tables: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_tables WHERE schemaname = $1")
            .bind(&guard.schema)
            .fetch_one(&mut admin)
            .await
            .unwrap();
        assert_eq!(tables, 0);

        // A schema that does not exist, in a database where the role may not create schemas.
        let other = PgStore::connect_with(PgStoreOptions {
            schema: format!("{}_x", guard.schema),
            ..PgStoreOptions::new(&role_url)
        })
        .await
        .unwrap();
        let err = other.migrate().await.expect_err("no CREATE on the database");
        assert!(matches!(err, StoreError::Permission { .. }), "{err:?}");
        store.close().await;
        other.close().await;
    }
    .await;
    let _ = admin.execute(format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", guard.schema).as_str()).await;
    let _ = admin.execute(format!("DROP ROLE IF EXISTS \"{role}\"").as_str()).await;
    result
}

#[tokio::test]
async fn a_database_migrated_by_a_newer_version_is_refused() {
    let Some(store) = pg_store().await else { return };
    let latest = migrate::latest_version();
    assert_eq!(store.schema_version().await.unwrap(), latest);
    let mut conn = store.pool().acquire().await.unwrap();
    conn.execute(
        format!(
            "INSERT INTO \"{}\".schema_migrations (version, description) VALUES (999, 'from the future')",
            store.schema()
        )
        .as_str(),
    )
    .await
    .unwrap();
    drop(conn);
    let err = store.migrate().await.expect_err("newer schema");
    let text = err.to_string();
    assert!(matches!(err, StoreError::Schema { .. }), "{err:?}");
    assert!(
        text.contains("version 999") && text.contains(&format!("({latest})")) && text.contains("upgrade kaiten-sync"),
        "{text}"
    );
}

#[tokio::test]
async fn an_unmigrated_schema_says_so() {
    let Some(url) = server().await else { return };
    let guard = SchemaGuard::new(&url);
    let store = PgStore::connect_with(guard.options()).await.unwrap();
    assert_eq!(store.schema_version().await.unwrap(), 0);
    for result in [
        store.counts().await.map(|_| ()),
        store.apply_page(&page(Batch::Spaces(vec![space(1)]))).await.map(|_| ()),
        store.entity_state(EntityKind::Cards).await.map(|_| ()),
        store.try_lock("h", Duration::from_secs(60)).await.map(|_| ()),
    ] {
        assert!(matches!(result, Err(StoreError::NotMigrated)), "{result:?}");
    }
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_migrations_all_succeed() {
    let Some(url) = server().await else { return };
    let guard = SchemaGuard::new(&url);
    let mut stores = Vec::new();
    for _ in 0..4 {
        stores.push(PgStore::connect_with(guard.options()).await.unwrap());
    }
    let (r0, r1, r2, r3) =
        tokio::join!(stores[0].migrate(), stores[1].migrate(), stores[2].migrate(), stores[3].migrate());
    for r in [r0, r1, r2, r3] {
        r.expect("every concurrent migrate succeeds");
    }
    assert_eq!(stores[0].schema_version().await.unwrap(), migrate::latest_version());
    for s in &stores {
        s.close().await;
    }
}

#[tokio::test]
async fn advisory_lock_excludes_other_stores_and_dies_with_its_connection() {
    let Some(a) = pg_store().await else { return };
    let b = PgStore::connect_with(a.guard.options()).await.unwrap();
    let stale = Duration::from_secs(600);
    assert_eq!(a.try_lock("process-a", stale).await.unwrap(), LockAttempt::Acquired);
    match b.try_lock("process-b", stale).await.unwrap() {
        LockAttempt::Held(info) => assert_eq!(info.holder, "process-a"),
        other => panic!("two stores got the lock: {other:?}"),
    }
    assert!(a.heartbeat_lock("process-a").await.unwrap(), "the holder's heartbeat says it still holds the lock");
    assert!(!b.heartbeat_lock("process-b").await.unwrap(), "a heartbeat of a run that never held the lock says so");
    a.release_lock("process-a").await.unwrap();
    assert_eq!(b.try_lock("process-b", stale).await.unwrap(), LockAttempt::Acquired);
    b.release_lock("process-b").await.unwrap();

    // A process that dies: its session ends, and so does its lock.
    let mut raw = PgConnection::connect(&a.guard.store_url()).await.unwrap();
    sqlx::query("SELECT pg_advisory_lock($1)").bind(a.advisory_lock_key()).execute(&mut raw).await.unwrap();
    assert!(matches!(b.try_lock("process-b", stale).await.unwrap(), LockAttempt::Held(_)));
    raw.close().await.unwrap();
    assert_eq!(b.try_lock("process-b", stale).await.unwrap(), LockAttempt::Acquired);

    // A holder whose heartbeat stopped (a hung process) is taken over: its session is ended.
    assert!(matches!(a.try_lock("process-a", stale).await.unwrap(), LockAttempt::Held(_)));
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(a.try_lock("process-a", Duration::from_millis(1)).await.unwrap(), LockAttempt::Acquired);
    assert!(
        !b.heartbeat_lock("process-b").await.expect("a former holder's heartbeat is a no-op"),
        "a holder whose lock was taken over learns it from its heartbeat"
    );
    match b.try_lock("process-b", stale).await.unwrap() {
        LockAttempt::Held(info) => assert_eq!(info.holder, "process-a"),
        other => panic!("the old holder kept the lock: {other:?}"),
    }
    a.release_lock("process-a").await.unwrap();
    b.close().await;
}

#[tokio::test]
async fn table_lock_works_across_stores() {
    let Some(a) = pg_store_with(|o| o.lock_mode = LockMode::Table).await else { return };
    let b = PgStore::connect_with(PgStoreOptions { lock_mode: LockMode::Table, ..a.guard.options() }).await.unwrap();
    let stale = Duration::from_secs(600);
    assert_eq!(a.try_lock("a", stale).await.unwrap(), LockAttempt::Acquired);
    assert!(matches!(b.try_lock("b", stale).await.unwrap(), LockAttempt::Held(i) if i.holder == "a"));
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(b.try_lock("b", Duration::from_millis(1)).await.unwrap(), LockAttempt::Acquired, "stale takeover");
    assert!(matches!(a.try_lock("a", stale).await.unwrap(), LockAttempt::Held(i) if i.holder == "b"));
    b.release_lock("b").await.unwrap();
    b.close().await;
}

/// A table lock left by a killed process of this host is taken over at once (not after the stale
/// timeout); one held by another host waits.
#[tokio::test]
async fn table_lock_of_a_process_gone_from_this_host_is_taken_over_at_once() {
    let Some(a) = pg_store_with(|o| o.lock_mode = LockMode::Table).await else { return };
    let stale = Duration::from_secs(24 * 3600);
    let mut exited = std::process::Command::new("true").spawn().unwrap();
    let pid = exited.id();
    exited.wait().unwrap();
    let dead = format!("{}:{pid}:deadbeef", kaiten_sync::holder::local_host());
    assert_eq!(a.try_lock(&dead, stale).await.unwrap(), LockAttempt::Acquired);
    assert_eq!(a.try_lock("next-run", stale).await.unwrap(), LockAttempt::Acquired, "the dead holder's lock is free");
    a.release_lock("next-run").await.unwrap();
    let elsewhere = "otherhost.example:1:cafebabe";
    assert_eq!(a.try_lock(elsewhere, stale).await.unwrap(), LockAttempt::Acquired);
    assert!(
        matches!(a.try_lock("next-run", stale).await.unwrap(), LockAttempt::Held(i) if i.holder == elsewhere),
        "a holder on another host waits for the stale timeout"
    );
    a.release_lock(elsewhere).await.unwrap();
}

async fn prepared_statements_after_work(store: &PgStore) -> i64 {
    parents(store).await;
    store.apply_page(&page(Batch::Cards(cards(1, 10, 10, 100)))).await.unwrap();
    store.apply_page(&page(Batch::Cards(cards(1, 10, 10, 100)))).await.unwrap();
    store.counts().await.unwrap();
    store.get(EntityKind::Cards, 1).await.unwrap().unwrap();
    store.save_entity_state(&EntityState::new(EntityKind::Cards)).await.unwrap();
    let mut conn = store.pool().acquire().await.unwrap();
    sqlx::query_scalar::<_, i64>("SELECT count(*) FROM pg_prepared_statements")
        .persistent(false)
        .fetch_one(&mut *conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn statement_cache_off_uses_no_named_prepared_statements() {
    let Some(store) = pg_store_with(|o| o.max_connections = 1).await else { return };
    assert_eq!(prepared_statements_after_work(&store).await, 0, "a transaction-mode pooler needs unnamed statements");
    // The check itself works: with the cache on, statements are prepared by name.
    let Some(cached) = pg_store_with(|o| {
        o.max_connections = 1;
        o.statement_cache_capacity = 100;
    })
    .await
    else {
        return;
    };
    assert!(prepared_statements_after_work(&cached).await > 0);
}

#[tokio::test]
async fn foreign_keys_exist_are_deferrable_and_follow_the_option() {
    let Some(store) = pg_store().await else { return };
    let schema = store.schema().to_owned();
    let mut conn = store.pool().acquire().await.unwrap();
    let fks: Vec<(String, bool, bool, bool)> = sqlx::query(
        "SELECT c.conname::text, c.condeferrable, c.condeferred, c.convalidated FROM pg_constraint c \
         JOIN pg_namespace n ON n.oid = c.connamespace WHERE n.nspname = $1 AND c.contype = 'f' ORDER BY 1",
    )
    .bind(&schema)
    .fetch_all(&mut *conn)
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
    .collect();
    let mut expected: Vec<&str> = migrate::FOREIGN_KEYS.iter().map(|f| f.0).collect();
    expected.sort_unstable();
    assert_eq!(fks.iter().map(|f| f.0.as_str()).collect::<Vec<_>>(), expected);
    assert!(fks.iter().all(|f| f.1 && f.2 && f.3), "deferrable, initially deferred, validated: {fks:?}");

    // Order within a transaction does not matter.
    let s = &schema;
    conn.execute(
        format!(
            "BEGIN; INSERT INTO \"{s}\".cards (id, board_id, raw, synced_at) VALUES (77, 700, '{{}}', now()); \
             INSERT INTO \"{s}\".boards (id, raw, synced_at) VALUES (700, '{{}}', now()); COMMIT;"
        )
        .as_str(),
    )
    .await
    .expect("a child before its parent in one transaction");
    drop(conn);

    // A page whose parent never arrives is refused whole: rows, tags and state.
    let mut p = page(Batch::Cards(vec![card(1, 999, 100, 1)]));
    p.state = Some(EntityState { cursor: Some(chrono::Utc::now()), ..EntityState::new(EntityKind::Cards) });
    let err = store.apply_page(&p).await.expect_err("board 999 is not stored");
    assert!(chain(&err).contains("cards_board_id_fkey"), "{}", chain(&err));
    assert_eq!(store.get(EntityKind::Cards, 1).await.unwrap(), None);
    assert!(store.card_tag_ids(1).await.unwrap().is_empty());
    assert_eq!(store.entity_state(EntityKind::Cards).await.unwrap(), EntityState::new(EntityKind::Cards));

    // Turned off, migrate drops them; turned on again, it adds them back (not validated when
    // existing rows break them, but still checking new rows).
    let off = store.clone().with_foreign_keys(false);
    off.migrate().await.unwrap();
    assert_eq!(fk_count(&store).await, 0);
    off.apply_page(&p).await.expect("no foreign keys");
    let on = store.clone().with_foreign_keys(true);
    on.migrate().await.expect("re-adding foreign keys over an orphan succeeds");
    assert_eq!(fk_count(&store).await, migrate::FOREIGN_KEYS.len() as i64);
    let err = on.apply_page(&page(Batch::Cards(vec![card(2, 998, 100, 1)]))).await.expect_err("checked again");
    assert!(chain(&err).contains("foreign key"), "{}", chain(&err));
}

async fn fk_count(store: &PgStore) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace \
         WHERE n.nspname = $1 AND c.contype = 'f'",
    )
    .bind(store.schema())
    .fetch_one(store.pool())
    .await
    .unwrap()
}

#[tokio::test]
async fn tables_mirror_the_schema_definition_and_have_the_indexes_users_need() {
    let Some(store) = pg_store().await else { return };
    let pool = store.pool();
    for table in &TABLES {
        let columns: Vec<(String, String)> = sqlx::query(
            "SELECT column_name::text, data_type::text FROM information_schema.columns \
             WHERE table_schema = $1 AND table_name = $2 ORDER BY ordinal_position",
        )
        .bind(store.schema())
        .bind(table.name)
        .fetch_all(pool)
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
        let mut expected = vec![("id".to_owned(), "bigint".to_owned())];
        expected.extend(table.columns.iter().map(|c| {
            let ty = match c.ty {
                ColumnType::BigInt => "bigint",
                ColumnType::Float => "double precision",
                ColumnType::Text => "text",
                ColumnType::Bool => "boolean",
                ColumnType::Timestamp => "timestamp with time zone",
                ColumnType::Json => "jsonb",
            };
            (c.name.to_owned(), ty.to_owned())
        }));
        for (name, ty) in
            [("raw", "jsonb"), ("synced_at", "timestamp with time zone"), ("deleted_at", "timestamp with time zone")]
        {
            expected.push((name.into(), ty.into()));
        }
        expected.push(("seen_sweep".into(), "bigint".into()));
        expected.push(("raw_hash".into(), "bigint".into()));
        // Columns added by later migrations (`ALTER TABLE ... ADD COLUMN`) come last in the table;
        // statements name their columns, so only the set matters.
        let mut columns = columns;
        columns.sort();
        expected.sort();
        assert_eq!(columns, expected, "table {}", table.name);
    }
    let indexes: Vec<String> =
        sqlx::query_scalar("SELECT indexdef FROM pg_indexes WHERE schemaname = $1 AND tablename = 'cards'")
            .bind(store.schema())
            .fetch_all(pool)
            .await
            .unwrap();
    for column in ["board_id", "column_id", "lane_id", "space_id", "owner_id", "type_id", "updated", "synced_at"] {
        assert!(indexes.iter().any(|d| d.ends_with(&format!("({column})"))), "cards.{column} index: {indexes:?}");
    }
    assert!(indexes.iter().any(|d| d.contains("WHERE (deleted_at IS NULL)")), "{indexes:?}");
    for table in ["sync_metadata", "sync_logs", "sync_lock", "schema_migrations", "card_tags", "card_members"] {
        let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(format!("\"{}\".{table}", store.schema()))
            .fetch_one(pool)
            .await
            .unwrap();
        assert!(exists, "{table}");
    }
}

#[tokio::test]
async fn text_the_database_cannot_hold_does_not_fail_a_sync() {
    let Some(store) = pg_store_with(|o| o.foreign_keys = false).await else { return };
    let mut json = card_json(1, 10, 100, 1);
    json["title"] = serde_json::json!("nul\u{0}inside");
    let card = <kaiten_sync::kaiten_client::Card as kaiten_sync::kaiten_client::Record>::from_value(json).unwrap();
    let outcome = store.apply_page(&page(Batch::Cards(vec![card]))).await.expect("stored");
    assert_eq!(outcome, PageOutcome { inserted: 1, updated: 0, unchanged: 0 });
    let stored = store.get(EntityKind::Cards, 1).await.unwrap().unwrap();
    assert_eq!(stored.raw["title"], "nul\u{FFFD}inside");
}

#[tokio::test]
async fn run_log_keeps_microseconds() {
    let Some(store) = pg_store().await else { return };
    let started = chrono::DateTime::parse_from_rfc3339("2025-03-04T05:06:07.123456Z").unwrap().to_utc();
    let mut run = kaiten_sync::RunRecord::start(kaiten_sync::RunKind::Webhook, vec![EntityKind::Cards], None, started);
    run.id = store.start_run(&run).await.unwrap();
    assert_eq!(store.recent_runs(1).await.unwrap(), vec![run]);
}

/// TLS against the local server: `sslmode=require`, and `verify-full` trusting the server's
/// self-signed certificate (`KAITEN_TEST_TLS_ROOT_CERT`, default Debian's snakeoil certificate,
/// issued to `localhost`). Skipped when the server has TLS off or the certificate is not readable.
#[tokio::test]
async fn tls_require_and_verify_full() {
    let Some(url) = server().await else { return };
    let ssl_on: String = {
        let mut conn = PgConnection::connect(&url).await.unwrap();
        let on = sqlx::query_scalar("SHOW ssl").fetch_one(&mut conn).await.unwrap();
        conn.close().await.unwrap();
        on
    };
    let cert =
        std::env::var("KAITEN_TEST_TLS_ROOT_CERT").unwrap_or_else(|_| "/etc/ssl/certs/ssl-cert-snakeoil.pem".into());
    if ssl_on != "on" || std::fs::metadata(&cert).is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but the test server has ssl={ssl_on} or {cert} is missing: the TLS test cannot run"
        );
        common::skip(&format!(
            "the test server has ssl={ssl_on} or {cert} is missing; enable ssl or set KAITEN_TEST_TLS_ROOT_CERT"
        ));
        return;
    }
    let host = std::env::var("KAITEN_TEST_TLS_HOST").unwrap_or_else(|_| "localhost".into());
    let opts: sqlx::postgres::PgConnectOptions = url.parse().unwrap();
    let base = |host: &str| {
        format!(
            "postgres://{}@{host}:{}/{}",
            opts.get_username(),
            opts.get_port(),
            opts.get_database().unwrap_or("postgres")
        )
    };

    let required = PgStore::connect(&with_param(&base(opts.get_host()), "sslmode", "require")).await.expect("require");
    assert!(uses_tls(required).await, "sslmode=require connects over TLS");

    let verified = with_param(&with_param(&base(&host), "sslmode", "verify-full"), "sslrootcert", &cert);
    let store = PgStore::connect(&verified).await.expect("verify-full with the server's certificate as root");
    assert!(uses_tls(store).await);

    // The name must match the certificate (it is issued to localhost, not 127.0.0.1) ...
    let mismatch = with_param(&with_param(&base("127.0.0.1"), "sslmode", "verify-full"), "sslrootcert", &cert);
    let err = PgStore::connect(&mismatch).await.expect_err("the certificate does not name 127.0.0.1");
    assert!(matches!(err, StoreError::Unavailable { .. }) && err.to_string().contains("TLS"), "{err}");
    // ... and the certificate must be trusted.
    let untrusted = with_param(&base(&host), "sslmode", "verify-full");
    let err = PgStore::connect(&untrusted).await.expect_err("a self-signed certificate is not a public root");
    assert!(err.to_string().contains("TLS"), "{err}");
}

#[tokio::test]
async fn records_whose_hash_is_unknown_are_compared_by_json_and_still_swept() {
    let Some(store) = pg_store_with(|o| o.foreign_keys = false).await else { return };
    let first = store.apply_page(&page(Batch::Cards(cards(1, 3, 10, 100)))).await.unwrap();
    assert_eq!(first.inserted, 3);
    // Rows written by other means (or by another serialization) have no matching hash.
    sqlx::query(&format!("UPDATE \"{}\".cards SET raw_hash = NULL WHERE id = 2", store.schema()))
        .execute(store.pool())
        .await
        .unwrap();
    let mut again = page(Batch::Cards(cards(1, 3, 10, 100)));
    again.sweep = Some(5);
    again.synced_at += chrono::Duration::seconds(60);
    let outcome = store.apply_page(&again).await.unwrap();
    assert_eq!(outcome, PageOutcome { inserted: 0, updated: 0, unchanged: 3 }, "same JSON: unchanged");
    assert!(store.unseen(EntityKind::Cards, 5, &kaiten_sync::Scope::All).await.unwrap().is_empty(), "all swept");
    let stored = store.get(EntityKind::Cards, 2).await.unwrap().unwrap();
    assert_eq!(stored.synced_at, kaiten_sync_testkit::fixtures::epoch(), "not rewritten");
}

#[tokio::test]
async fn broken_pooled_connections_are_replaced_and_sync_commit_works() {
    let Some(store) = pg_store_with(|o| {
        o.max_connections = 2;
        o.foreign_keys = false;
    })
    .await
    else {
        return;
    };
    store.counts().await.unwrap();
    // The server drops every connection of the store (a restart, a failover).
    let mut admin = PgConnection::connect(&server().await.unwrap()).await.unwrap();
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1")
        .bind(&store.guard.app)
        .execute(&mut admin)
        .await
        .unwrap();
    admin.close().await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    store.counts().await.expect("a fresh connection is used");
    let durable = store.store.clone().with_async_commit(false);
    let outcome = durable.apply_page(&page(Batch::Cards(cards(1, 2, 10, 100)))).await.unwrap();
    assert_eq!(outcome.inserted, 2);

    // Again, then a full listing's page: its lookup of stored hashes is tried on a fresh
    // connection too.
    let mut admin = PgConnection::connect(&server().await.unwrap()).await.unwrap();
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1")
        .bind(&store.guard.app)
        .execute(&mut admin)
        .await
        .unwrap();
    admin.close().await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let outcome = store.apply_page(&sweep_page(1, 3, 1)).await.expect("a fresh connection is used");
    assert_eq!((outcome.inserted, outcome.unchanged), (1, 2));
}

/// `(name, oid, comment)` of the page functions in a schema.
async fn page_functions(store: &PgStore) -> Vec<(String, i64, Option<String>)> {
    sqlx::query(
        "SELECT p.proname::text, p.oid::bigint, obj_description(p.oid, 'pg_proc') FROM pg_proc p \
         JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = $1 ORDER BY 1",
    )
    .bind(store.schema())
    .fetch_all(store.pool())
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect()
}

/// The page function of `table` among `functions`: `write_page_<table>_<16 hex digits>`.
fn page_function<'a>(functions: &'a [(String, i64, Option<String>)], table: &str) -> &'a (String, i64, Option<String>) {
    let prefix = format!("write_page_{table}_");
    let mut found = functions.iter().filter(|f| {
        f.0.strip_prefix(&prefix).is_some_and(|d| d.len() == 16 && d.bytes().all(|b| b.is_ascii_hexdigit()))
    });
    let function = found.next().unwrap_or_else(|| panic!("no page function for {table} in {functions:?}"));
    assert!(found.next().is_none(), "two page functions for {table}: {functions:?}");
    function
}

#[tokio::test]
async fn page_functions_are_installed_kept_and_repaired_by_migrate() {
    let Some(store) = pg_store().await else { return };
    let installed = page_functions(&store).await;
    assert_eq!(installed.len(), TABLES.len(), "{installed:?}");
    for t in TABLES {
        let (_, _, comment) = page_function(&installed, t.name);
        assert!(comment.as_deref().is_some_and(|c| c.starts_with("kaiten-sync page writer ")), "{comment:?}");
    }

    // Unchanged: a second migrate leaves them alone (sessions keep their cached plans).
    store.migrate().await.unwrap();
    assert_eq!(page_functions(&store).await, installed);

    // A function changed by hand is replaced; a missing one is a clear "migrate" error until
    // migrate puts it back.
    let s = store.schema();
    let tags = &page_function(&installed, "tags").0;
    let spaces = &page_function(&installed, "spaces").0;
    let users = &page_function(&installed, "users").0;
    store.pool().execute(format!("COMMENT ON FUNCTION \"{s}\".{users} IS 'edited'").as_str()).await.unwrap();
    // Edited in place: the comment stays, the settings go.
    store.pool().execute(format!("ALTER FUNCTION \"{s}\".{tags} RESET ALL").as_str()).await.unwrap();
    store.pool().execute(format!("DROP FUNCTION \"{s}\".{spaces}").as_str()).await.unwrap();
    let err = store.apply_page(&page(Batch::Spaces(vec![space(1)]))).await.unwrap_err();
    assert!(matches!(err, StoreError::NotMigrated), "{err:?}");
    assert!(store.get(EntityKind::Spaces, 1).await.unwrap().is_none());
    store.migrate().await.unwrap();
    let repaired = page_functions(&store).await;
    assert_eq!(
        repaired.iter().map(|f| (&f.0, &f.2)).collect::<Vec<_>>(),
        installed.iter().map(|f| (&f.0, &f.2)).collect::<Vec<_>>()
    );
    assert_ne!(page_function(&repaired, "tags").1, page_function(&installed, "tags").1);
    assert_ne!(page_function(&repaired, "users").1, page_function(&installed, "users").1);
    assert_eq!(page_function(&repaired, "cards").1, page_function(&installed, "cards").1);
    store.apply_page(&page(Batch::Spaces(vec![space(1)]))).await.unwrap();
    assert!(store.get(EntityKind::Spaces, 1).await.unwrap().is_some());

    // Another version's function (another digest) is neither called nor removed: a process of
    // that version may still be running against this database.
    let other = "write_page_spaces_0123456789abcdef";
    store.pool().execute(format!("ALTER FUNCTION \"{s}\".{spaces} RENAME TO {other}").as_str()).await.unwrap();
    let err = store.apply_page(&page(Batch::Spaces(vec![space(2)]))).await.unwrap_err();
    assert!(matches!(err, StoreError::NotMigrated), "{err:?}");
    store.migrate().await.unwrap();
    let both = page_functions(&store).await;
    assert!(both.iter().any(|f| f.0 == other) && both.iter().any(|f| f.0 == *spaces), "{both:?}");
    store.apply_page(&page(Batch::Spaces(vec![space(2)]))).await.unwrap();
    assert!(store.get(EntityKind::Spaces, 2).await.unwrap().is_some());
}

#[tokio::test]
async fn a_page_commits_with_the_requested_durability() {
    let Some(store) = pg_store_with(|o| o.max_connections = 1).await else { return };
    parents(&*store).await;
    // The store never changes a session setting (a connection behind a pooler is shared).
    let show = "SHOW synchronous_commit";
    // The store's one connection starts with durable commits, whatever the server's default.
    sqlx::query("SET synchronous_commit TO on").execute(store.pool()).await.unwrap();
    let before: String = sqlx::query_scalar(show).fetch_one(store.pool()).await.unwrap();
    assert_eq!(before, "on");
    assert_eq!(store.apply_page(&page(Batch::Cards(cards(1, 3, 10, 100)))).await.unwrap().inserted, 3);
    assert_eq!(sqlx::query_scalar::<_, String>(show).fetch_one(store.pool()).await.unwrap(), before);

    // The page function turns synchronous_commit off for its own transaction when asked to (its
    // next-to-last parameter for tables other than cards, before the ids to mark seen), and leaves
    // it alone otherwise.
    let spaces = page_function(&page_functions(&store).await, "spaces").0.clone();
    let types: Vec<String> = sqlx::query_scalar(
        "SELECT format_type(t, NULL) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace, \
         unnest(p.proargtypes) WITH ORDINALITY AS a(t, i) WHERE n.nspname = $1 AND p.proname = $2 ORDER BY i",
    )
    .bind(store.schema())
    .bind(&spaces)
    .fetch_all(store.pool())
    .await
    .unwrap();
    let flag_at = types.len() - 2;
    assert_eq!((types[flag_at].as_str(), types[flag_at + 1].as_str()), ("boolean", "bigint[]"));
    for (flag, expected) in [("true", "off"), ("false", before.as_str())] {
        let mut args: Vec<String> = types.iter().map(|t| format!("NULL::{t}")).collect();
        args[flag_at] = flag.to_owned();
        let mut tx = store.pool().begin().await.unwrap();
        let rows: i64 =
            sqlx::query_scalar(&format!("SELECT count(*) FROM \"{}\".{spaces}({})", store.schema(), args.join(", ")))
                .fetch_one(&mut *tx)
                .await
                .unwrap();
        assert_eq!(rows, 0);
        let inside: String = sqlx::query_scalar(show).fetch_one(&mut *tx).await.unwrap();
        assert_eq!(inside, expected, "async commit {flag}");
        tx.rollback().await.unwrap();
    }
}

/// Scans of `table` since the schema was made, as the statistics see them once the store's one
/// connection has flushed its counters.
async fn seq_scans(store: &PgStore, table: &str) -> i64 {
    sqlx::query("SELECT pg_stat_force_next_flush()").execute(store.pool()).await.unwrap();
    sqlx::query("SELECT 1").execute(store.pool()).await.unwrap();
    sqlx::query_scalar("SELECT seq_scan FROM pg_stat_user_tables WHERE schemaname = $1 AND relname = $2")
        .bind(store.schema())
        .bind(table)
        .fetch_one(store.pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn pages_keep_looking_rows_up_by_key_while_the_table_grows() {
    // One server session: the plan its first pages made (on an empty table, where a full scan is
    // cheapest) is the one every later page reuses.
    let Some(store) = pg_store_with(|o| o.max_connections = 1).await else { return };
    parents(&*store).await;
    let before = seq_scans(&store, "cards").await;
    for n in 0..30 {
        let outcome = store.apply_page(&page(Batch::Cards(cards(1 + n * 100, 100, 10, 100)))).await.unwrap();
        assert_eq!(outcome.inserted, 100);
    }
    // Re-upserting unchanged rows goes through the same lookup.
    let outcome = store.apply_page(&page(Batch::Cards(cards(1, 100, 10, 100)))).await.unwrap();
    assert_eq!(outcome.unchanged, 100);
    assert_eq!(seq_scans(&store, "cards").await - before, 0, "a page scanned the whole cards table");
}

/// Version 3 fills `card_members` from the cards already stored with their members, exactly as the
/// page function writes them (here: a schema taken back to before version 3, then migrated again).
#[tokio::test]
async fn card_members_migration_fills_the_table_like_the_page_path() {
    let Some(store) = pg_store_with(|o| o.foreign_keys = false).await else { return };
    let cards = kaiten_sync_testkit::fixtures::cards_with_member_shapes();
    store.apply_page(&page(Batch::Cards(cards))).await.unwrap();
    let mut written = Vec::new();
    for id in 1..=6 {
        written.push(store.card_members(id).await.unwrap());
    }
    assert_eq!(written[0].len(), 5, "{written:?}");
    let s = store.schema();
    store
        .pool()
        .execute(
            format!("DROP TABLE \"{s}\".card_members; DELETE FROM \"{s}\".schema_migrations WHERE version = 3")
                .as_str(),
        )
        .await
        .unwrap();
    store.migrate().await.expect("version 3 applied again");
    for (id, members) in (1..=6).zip(&written) {
        assert_eq!(&store.card_members(id).await.unwrap(), members, "card {id}");
    }
}

/// `(n_tup_upd, n_tup_ins)` of a table, as the statistics see them once the store's one connection
/// has flushed its counters.
async fn tuple_writes(store: &PgStore, table: &str) -> (i64, i64) {
    sqlx::query("SELECT pg_stat_force_next_flush()").execute(store.pool()).await.unwrap();
    sqlx::query("SELECT 1").execute(store.pool()).await.unwrap();
    let row =
        sqlx::query("SELECT n_tup_upd, n_tup_ins FROM pg_stat_user_tables WHERE schemaname = $1 AND relname = $2")
            .bind(store.schema())
            .bind(table)
            .fetch_one(store.pool())
            .await
            .unwrap();
    (row.get(0), row.get(1))
}

/// A full listing's page of `count` cards from `first`, in sweep `sweep` (written `sweep` seconds
/// after the fixtures' epoch).
fn sweep_page(first: i64, count: i64, sweep: i64) -> Page {
    let mut p = page(Batch::Cards(cards(first, count, 10, 100)));
    p.sweep = Some(sweep);
    p.synced_at += chrono::Duration::seconds(sweep);
    p
}

/// `id:xmin` of every stored card, by id: a row version that moves was written.
async fn card_versions(store: &PgStore) -> Vec<String> {
    let sql = format!("SELECT id || ':' || xmin::text FROM \"{}\".cards ORDER BY id", store.schema());
    sqlx::query_scalar::<_, String>(&sql).fetch_all(store.pool()).await.unwrap()
}

/// A full listing that finds its records unchanged marks them seen in `sweep_marks` instead of
/// rewriting them (under MVCC, moving `seen_sweep` wrote a new version of the whole ~4 KiB row):
/// no row version is written, and `unseen` still finds exactly the rows the sweep did not list.
#[tokio::test]
async fn an_unchanged_listing_marks_its_rows_without_writing_them() {
    let Some(store) = pg_store_with(|o| {
        o.max_connections = 1;
        o.foreign_keys = false;
    })
    .await
    else {
        return;
    };
    let s = store.schema().to_owned();
    let unseen = |sweep: i64| {
        let store = &store;
        async move { store.unseen(EntityKind::Cards, sweep, &kaiten_sync::Scope::All).await.unwrap() }
    };
    let marks = || {
        let (store, s) = (&store, &s);
        async move {
            sqlx::query_as::<_, (String, i64, i64)>(&format!(
                "SELECT m.kind, m.sweep, x.id FROM \"{s}\".sweep_marks m, unnest(m.ids) AS x(id) ORDER BY 2, 3"
            ))
            .fetch_all(store.pool())
            .await
            .unwrap()
        }
    };

    // Sweep 1 writes ten cards: they carry the sweep in their row, no mark.
    assert_eq!(store.apply_page(&sweep_page(1, 10, 1)).await.unwrap().inserted, 10);
    assert!(unseen(1).await.is_empty());
    assert!(marks().await.is_empty());

    // Sweep 2 lists cards 1..=7 unchanged, in two pages: no row is written, each gets a mark (the
    // second page keeps the first page's marks), and the three others are unseen.
    let before = card_versions(&store).await;
    let writes = tuple_writes(&store, "cards").await;
    for (first, count) in [(1, 4), (5, 3)] {
        let outcome = store.apply_page(&sweep_page(first, count, 2)).await.unwrap();
        assert_eq!(outcome, PageOutcome { inserted: 0, updated: 0, unchanged: count as u64 });
    }
    assert_eq!(card_versions(&store).await, before, "an unchanged row was rewritten");
    assert_eq!(tuple_writes(&store, "cards").await, writes, "an unchanged listing wrote to the cards table");
    assert_eq!(marks().await, (1..=7).map(|id| ("cards".to_owned(), 2, id)).collect::<Vec<_>>());
    assert_eq!(unseen(2).await, vec![8, 9, 10]);
    let rows: i64 =
        sqlx::query_scalar(&format!("SELECT count(*) FROM \"{s}\".sweep_marks")).fetch_one(store.pool()).await.unwrap();
    assert_eq!(rows, 2, "one mark row per page");
    // The same page again (a resumed listing) is still seen; an older sweep's view is unchanged.
    store.apply_page(&sweep_page(1, 4, 2)).await.unwrap();
    assert_eq!(unseen(2).await, vec![8, 9, 10]);
    assert!(unseen(1).await.is_empty());
    assert_eq!(card_versions(&store).await, before);

    // Sweep 3: its first marks drop sweep 2's; a changed card is written with the sweep (no mark),
    // an older copy of a card is not written but marked.
    let mut third = sweep_page(1, 2, 3);
    let Batch::Cards(listed) = &mut third.batch else { unreachable!() };
    listed.push(card(3, 10, 200, 2));
    listed.push(card(4, 10, 50, 1));
    let outcome = store.apply_page(&third).await.unwrap();
    assert_eq!(outcome, PageOutcome { inserted: 0, updated: 1, unchanged: 3 });
    assert_eq!(marks().await, [1, 2, 4].map(|id| ("cards".to_owned(), 3, id)).to_vec());
    assert_eq!(unseen(3).await, (5..=10).collect::<Vec<_>>());
    let after = card_versions(&store).await;
    let rewritten: Vec<_> = before.iter().zip(&after).filter(|(a, b)| a != b).map(|(a, _)| a.clone()).collect();
    assert_eq!(rewritten.len(), 1, "only card 3 is written: {rewritten:?}");
    assert!(rewritten[0].starts_with("3:"), "{rewritten:?}");
    let sweep: Option<i64> = sqlx::query_scalar(&format!("SELECT seen_sweep FROM \"{s}\".cards WHERE id = 3"))
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(sweep, Some(3));
}

/// A record stored under another spelling of its JSON (a mirror written by a release that stored
/// re-serialised JSON) takes the incoming text's hash once, without a new row version for the
/// record; from then on the listing's hash check skips it before any JSON is compared.
#[tokio::test]
async fn a_respelled_record_takes_the_new_hash_once_and_is_skipped_after() {
    let Some(store) = pg_store_with(|o| o.foreign_keys = false).await else { return };
    let s = store.schema().to_owned();
    use kaiten_sync::kaiten_client::Record;
    let from_text = |text: &str| {
        kaiten_sync::kaiten_client::Card::from_raw(serde_json::value::RawValue::from_string(text.to_owned()).unwrap())
            .unwrap()
    };
    let sorted = from_text(r#"{"board_id":10,"id":1,"title":"T","updated":"2025-01-01T00:00:00Z"}"#);
    let kaitens = from_text(r#"{"id": 1, "title": "T", "updated": "2025-01-01T00:00:00Z", "board_id": 10}"#);
    let state = || {
        let (store, s) = (&store, &s);
        async move {
            sqlx::query_as::<_, (i64, String, String)>(&format!(
                "SELECT raw_hash, synced_at::text, raw::text FROM \"{s}\".cards WHERE id = 1"
            ))
            .fetch_one(store.pool())
            .await
            .unwrap()
        }
    };
    assert_eq!(store.apply_page(&page(Batch::Cards(vec![sorted]))).await.unwrap().inserted, 1);
    let before = state().await;
    let mut again = page(Batch::Cards(vec![kaitens.clone()]));
    again.synced_at += chrono::Duration::seconds(60);
    assert_eq!(store.apply_page(&again).await.unwrap().unchanged, 1);
    let after = state().await;
    assert_ne!(after.0, before.0, "the hash is the incoming text's");
    assert_eq!((&after.1, &after.2), (&before.1, &before.2), "nothing else of the row changes");
    let version = card_versions(&store).await;
    again.synced_at += chrono::Duration::seconds(60);
    assert_eq!(store.apply_page(&again).await.unwrap().unchanged, 1);
    assert_eq!(card_versions(&store).await, version, "the second listing in Kaiten's spelling writes nothing");
}

/// A full listing's pages look up their rows' stored hashes first, unless an earlier page of the
/// same sweep found none stored in an empty table (a first listing): then stored rows reach the
/// page statement whole, which still recognises them unchanged and marks them seen. A re-sync's page
/// of new cards keeps the lookup on. Every way, nothing the sweep saw is reported unseen and no
/// unchanged row is rewritten.
#[tokio::test]
async fn pages_after_an_empty_lookup_still_mark_stored_rows_seen() {
    let Some(store) = pg_store_with(|o| o.foreign_keys = false).await else { return };
    let outcome = |p: PageOutcome| (p.inserted, p.updated, p.unchanged);
    // Sweep 1, a first listing: its first page finds the table empty; a later page lists stored
    // rows again (windows overlap) and goes to the page statement whole.
    assert_eq!(store.apply_page(&sweep_page(1, 10, 1)).await.unwrap().inserted, 10);
    let before = card_versions(&store).await;
    assert_eq!(outcome(store.apply_page(&sweep_page(1, 10, 1)).await.unwrap()), (0, 0, 10));
    assert!(store.unseen(EntityKind::Cards, 1, &kaiten_sync::Scope::All).await.unwrap().is_empty());
    assert_eq!(card_versions(&store).await, before, "unchanged rows are not rewritten");
    // Sweep 2, a re-sync: a page of new cards first, then the stored ones, looked up and marked.
    assert_eq!(store.apply_page(&sweep_page(11, 10, 2)).await.unwrap().inserted, 10);
    assert_eq!(outcome(store.apply_page(&sweep_page(1, 10, 2)).await.unwrap()), (0, 0, 10));
    assert!(store.unseen(EntityKind::Cards, 2, &kaiten_sync::Scope::All).await.unwrap().is_empty());
    assert_eq!(card_versions(&store).await[..10], before[..]);
    // Sweep 3 starts with stored rows.
    assert_eq!(outcome(store.apply_page(&sweep_page(1, 20, 3)).await.unwrap()), (0, 0, 20));
    assert!(store.unseen(EntityKind::Cards, 3, &kaiten_sync::Scope::All).await.unwrap().is_empty());
    assert_eq!(card_versions(&store).await[..10], before[..]);
    // A row marked deleted is brought back by the next listing that shows it live.
    store.mark_deleted(EntityKind::Cards, &[5], chrono::Utc::now()).await.unwrap();
    assert_eq!(outcome(store.apply_page(&sweep_page(1, 20, 4)).await.unwrap()), (0, 1, 19));
    assert!(store.get(EntityKind::Cards, 5).await.unwrap().unwrap().deleted_at.is_none());
}
