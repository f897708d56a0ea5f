//! Behaviour specific to the SQLite store: opening, migrations, several connections on one file,
//! WAL, the schema users query.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use kaiten_store_sqlite::{latest_version, SqliteOptions, SqliteStore};
use kaiten_sync::error::chain;
use kaiten_sync::schema::{ColumnType, TABLES};
use kaiten_sync::{Batch, EntityKind, EntityState, LockAttempt, Page, Scope, SqlValue, Store, StoreError};
use kaiten_sync_testkit::fixtures;

fn page(batch: Batch) -> Page {
    Page { batch, sweep: None, state: None, synced_at: fixtures::epoch() + chrono::Duration::seconds(1000) }
}

async fn migrated(path: &std::path::Path) -> SqliteStore {
    let store = SqliteStore::open(path).expect("open");
    store.migrate().await.expect("migrate");
    store
}

#[tokio::test]
async fn open_errors_name_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-dir").join("kaiten.db");
    let err = SqliteStore::open(&missing).expect_err("a missing directory cannot hold a database");
    assert!(matches!(err, StoreError::Unavailable { backend: "sqlite", .. }), "{err:?}");
    assert!(err.to_string().contains(&missing.display().to_string()), "{err}");
    assert!(err.to_string().contains("does not exist"), "{err}");

    let url = format!("sqlite://{}", missing.display());
    let err = SqliteStore::open(&url).expect_err("same through a URL");
    assert!(err.to_string().contains(&missing.display().to_string()), "{err}");

    let not_a_db = dir.path().join("notes.txt");
    std::fs::write(&not_a_db, "this is not a SQLite database, just some text that is long enough").unwrap();
    let err = SqliteStore::open(&not_a_db).expect_err("a text file is not a database");
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
    assert!(err.to_string().contains("notes.txt"), "{err}");

    let err = SqliteStore::open(dir.path()).expect_err("a directory is not a database");
    assert!(err.to_string().contains(&dir.path().display().to_string()), "{err}");
}

#[tokio::test]
async fn opens_paths_urls_and_memory() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("created.db");
    assert!(!file.exists());
    let store = migrated(&file).await;
    assert!(file.exists(), "the file is created");
    assert_eq!(store.location(), file.display().to_string());
    drop(store);

    let url = format!("sqlite://{}", dir.path().join("url.db").display()); // sqlite:///abs/path
    assert!(url.starts_with("sqlite:///"));
    let store = SqliteStore::open(&url).unwrap();
    store.migrate().await.unwrap();
    assert!(dir.path().join("url.db").exists());

    for memory in [SqliteStore::open("sqlite::memory:").unwrap(), SqliteStore::in_memory().unwrap()] {
        memory.migrate().await.unwrap();
        memory.apply_page(&page(Batch::Cards(fixtures::cards(1, 3, 10, 100)))).await.unwrap();
        assert_eq!(memory.ids(EntityKind::Cards, false).await.unwrap(), vec![1, 2, 3]);
    }
    assert!(format!("{:?}", SqliteStore::in_memory().unwrap()).contains(":memory:"));
}

#[tokio::test]
async fn migrate_twice_and_refuse_a_newer_schema() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.db");
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.schema_version().await.unwrap(), None);
    store.migrate().await.unwrap();
    store.migrate().await.unwrap();
    assert_eq!(store.schema_version().await.unwrap(), Some(latest_version()));
    let applied: i64 = store
        .with_connection(|c| c.query_row("SELECT count(*) FROM schema_migrations", [], |r| r.get(0)))
        .await
        .unwrap();
    assert_eq!(applied, kaiten_store_sqlite::MIGRATIONS.len() as i64, "every migration once (versions may skip)");

    let newer = latest_version() + 41;
    store
        .with_connection(move |c| {
            c.execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, '2030-01-01T00:00:00.000Z')",
                [newer],
            )
        })
        .await
        .unwrap();
    let err = store.migrate().await.expect_err("a newer schema is refused");
    let StoreError::Schema { message, .. } = &err else { panic!("expected Schema, got {err:?}") };
    assert_eq!(
        message,
        &format!(
            "database schema version {newer} is newer than this kaiten-sync (knows up to {}): upgrade kaiten-sync",
            latest_version()
        )
    );
}

#[tokio::test]
async fn an_unmigrated_database_says_so() {
    let store = SqliteStore::in_memory().unwrap();
    let err = store.counts().await.expect_err("no tables yet");
    assert!(matches!(err, StoreError::NotMigrated), "{err:?}");
    let err = store.apply_page(&page(Batch::Cards(fixtures::cards(1, 1, 10, 100)))).await.unwrap_err();
    assert!(matches!(err, StoreError::NotMigrated), "{err:?}");
    assert!(matches!(store.try_lock("a", Duration::from_secs(1)).await, Err(StoreError::NotMigrated)));
    assert!(matches!(store.entity_states().await, Err(StoreError::NotMigrated)));
}

#[tokio::test]
async fn migrated_schema_matches_the_tables_definition() {
    let store = SqliteStore::in_memory().unwrap();
    store.migrate().await.unwrap();
    for table in TABLES.iter() {
        let name = table.name;
        let columns: Vec<(String, String, bool)> = store
            .with_connection(move |c| {
                let mut stmt = c.prepare("SELECT name, type, \"notnull\" FROM pragma_table_info(?1) ORDER BY cid")?;
                let rows = stmt.query_map([name], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
                rows.collect()
            })
            .await
            .unwrap();
        // `cards` has a rowid of its own and `id` as a NOT NULL UNIQUE column (migration 7); the
        // other tables' `id` is their INTEGER PRIMARY KEY.
        let mut want: Vec<(String, String, bool)> = vec![("id".into(), "INTEGER".into(), name == "cards")];
        for c in table.columns {
            let ty = match c.ty {
                ColumnType::BigInt | ColumnType::Bool => "INTEGER",
                ColumnType::Float => "REAL",
                ColumnType::Text | ColumnType::Timestamp | ColumnType::Json => "TEXT",
            };
            want.push((c.name.into(), ty.into(), false));
        }
        want.push(("raw".into(), "TEXT".into(), true));
        want.push(("synced_at".into(), "TEXT".into(), true));
        want.push(("deleted_at".into(), "TEXT".into(), false));
        want.push(("seen_sweep".into(), "INTEGER".into(), false));
        // Columns added by later migrations (`ALTER TABLE ... ADD COLUMN`) come last in the file;
        // statements name their columns, so only the set matters.
        let (mut columns, mut want) = (columns, want);
        columns.sort();
        want.sort();
        assert_eq!(columns, want, "table {name} differs from kaiten_sync::schema::TABLES");
    }
}

#[tokio::test]
async fn wal_is_on_and_typed_columns_are_queryable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.db");
    let store = migrated(&path).await;
    let mode: String = store.with_connection(|c| c.query_row("PRAGMA journal_mode", [], |r| r.get(0))).await.unwrap();
    assert_eq!(mode, "wal");
    let fk: i64 = store.with_connection(|c| c.query_row("PRAGMA foreign_keys", [], |r| r.get(0))).await.unwrap();
    assert_eq!(fk, 0);

    store.apply_page(&page(Batch::Cards(fixtures::cards(1, 20, 10, 100)))).await.unwrap();
    let mut later = page(Batch::Cards(fixtures::cards(21, 5, 11, 100)));
    later.synced_at = fixtures::epoch() + chrono::Duration::seconds(2000);
    store.apply_page(&later).await.unwrap();

    // Another connection, as a user's tool would open it.
    let conn = rusqlite::Connection::open(&path).unwrap();
    let mut stmt = conn.prepare("SELECT id, title, synced_at FROM cards ORDER BY synced_at DESC, id LIMIT 10").unwrap();
    let rows: Vec<(i64, String, String)> =
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap().collect::<Result<_, _>>().unwrap();
    assert_eq!(rows.len(), 10);
    assert_eq!(rows[0], (21, "Card 21".to_owned(), "2025-01-01T00:33:20.000Z".to_owned()));
    assert_eq!(rows[5].2, "2025-01-01T00:16:40.000Z");
    let (board, archived, props, updated): (i64, i64, String, String) = conn
        .query_row("SELECT board_id, archived, properties, updated FROM cards WHERE id = 3", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .unwrap();
    assert_eq!((board, archived, updated.as_str()), (10, 0, "2025-01-01T00:01:40.000Z"));
    assert_eq!(serde_json::from_str::<serde_json::Value>(&props).unwrap()["id_1"], "text value");
    let tagged: i64 = conn.query_row("SELECT count(*) FROM card_tags WHERE tag_id = 5", [], |r| r.get(0)).unwrap();
    assert_eq!(tagged, 25);
    let raw_title: String =
        conn.query_row("SELECT raw ->> '$.title' FROM cards WHERE id = 7", [], |r| r.get(0)).unwrap();
    assert_eq!(raw_title, "Card 7");
}

#[tokio::test]
async fn sub_millisecond_times_round_trip() {
    let store = SqliteStore::in_memory().unwrap();
    store.migrate().await.unwrap();
    let now = Utc::now();
    let mut p = page(Batch::Cards(fixtures::cards(1, 1, 10, 100)));
    p.synced_at = now;
    store.apply_page(&p).await.unwrap();
    let stored = store.get(EntityKind::Cards, 1).await.unwrap().unwrap();
    assert_eq!(stored.synced_at, now);
    assert_eq!(stored.value(EntityKind::Cards, "asap"), Some(&SqlValue::Bool(false)));
    assert_eq!(stored.value(EntityKind::Cards, "due_date"), Some(&SqlValue::Null));
    assert!(matches!(stored.value(EntityKind::Cards, "properties"), Some(SqlValue::Json(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_excludes_across_two_stores_on_one_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.db");
    let a: Arc<dyn Store> = Arc::new(migrated(&path).await);
    let b: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).unwrap());
    b.migrate().await.unwrap();
    let stale = Duration::from_secs(600);

    // Both race for the lock many times; exactly one wins each round.
    for round in 0..20 {
        let (ha, hb) = (format!("a-{round}"), format!("b-{round}"));
        let (ra, rb) = tokio::join!(
            {
                let a = a.clone();
                let ha = ha.clone();
                tokio::spawn(async move { a.try_lock(&ha, stale).await })
            },
            {
                let b = b.clone();
                let hb = hb.clone();
                tokio::spawn(async move { b.try_lock(&hb, stale).await })
            }
        );
        let (ra, rb) = (ra.unwrap().unwrap(), rb.unwrap().unwrap());
        let winner = match (&ra, &rb) {
            (LockAttempt::Acquired, LockAttempt::Held(info)) => {
                assert_eq!(info.holder, ha);
                &ha
            }
            (LockAttempt::Held(info), LockAttempt::Acquired) => {
                assert_eq!(info.holder, hb);
                &hb
            }
            other => panic!("round {round}: both or neither got the lock: {other:?}"),
        };
        a.release_lock(winner).await.unwrap();
    }

    assert_eq!(a.try_lock("a", stale).await.unwrap(), LockAttempt::Acquired);
    assert!(matches!(b.try_lock("b", stale).await.unwrap(), LockAttempt::Held(info) if info.holder == "a"));
    // A stale lock may be taken over.
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert_eq!(b.try_lock("b", Duration::from_millis(10)).await.unwrap(), LockAttempt::Acquired);
    assert!(matches!(a.try_lock("a", stale).await.unwrap(), LockAttempt::Held(info) if info.holder == "b"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_waits_for_the_busy_timeout_then_fails_busy() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.db");
    migrated(&path).await;
    let timeout = Duration::from_millis(300);
    let store = SqliteStore::open_with(&path, SqliteOptions::default().busy_timeout(timeout)).unwrap();

    let other = rusqlite::Connection::open(&path).unwrap();
    other.execute_batch("BEGIN IMMEDIATE; INSERT INTO sync_lock VALUES ('other', 'x', 'y', 'z');").unwrap();

    // Reads go on (WAL): the other writer does not block them.
    assert_eq!(store.ids(EntityKind::Cards, true).await.unwrap(), Vec::<i64>::new());

    let started = Instant::now();
    let err = store.apply_page(&page(Batch::Cards(fixtures::cards(1, 10, 10, 100)))).await.unwrap_err();
    let waited = started.elapsed();
    assert!(matches!(err, StoreError::Busy { backend: "sqlite", .. }), "{err:?}");
    assert!(waited >= timeout - Duration::from_millis(20), "gave up after {waited:?}");
    assert!(waited < Duration::from_secs(5), "waited {waited:?}");
    assert!(matches!(store.try_lock("me", Duration::from_secs(60)).await, Err(StoreError::Busy { .. })));

    other.execute_batch("ROLLBACK").unwrap();
    let outcome = store.apply_page(&page(Batch::Cards(fixtures::cards(1, 10, 10, 100)))).await.unwrap();
    assert_eq!(outcome.inserted, 10);
}

#[tokio::test]
async fn a_failing_statement_rolls_the_whole_page_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.db");
    let store = migrated(&path).await;
    store.apply_page(&page(Batch::Cards(fixtures::cards(1, 3, 10, 100)))).await.unwrap();
    // Make the database refuse card 999 half-way through a page.
    store
        .with_connection(|c| {
            c.execute_batch(
                "CREATE TRIGGER refuse_999 BEFORE INSERT ON cards WHEN NEW.id = 999
                 BEGIN SELECT RAISE(ABORT, 'card 999 refused'); END;",
            )
        })
        .await
        .unwrap();
    let mut cards = fixtures::cards(1, 3, 10, 200); // updates of stored cards
    cards.extend(fixtures::cards(500, 1, 10, 100)); // a new card
    cards.push(fixtures::card(999, 10, 100, 1)); // the refused one
    let mut p = page(Batch::Cards(cards));
    p.sweep = Some(5);
    let mut state = EntityState::new(EntityKind::Cards);
    state.cursor = Some(fixtures::epoch());
    p.state = Some(state);
    let err = store.apply_page(&p).await.unwrap_err();
    assert!(chain(&err).contains("card 999 refused"), "{}", chain(&err));

    assert_eq!(store.ids(EntityKind::Cards, true).await.unwrap(), vec![1, 2, 3]);
    let card = store.get(EntityKind::Cards, 1).await.unwrap().unwrap();
    assert_eq!(card.raw, fixtures::card_json(1, 10, 100, 1), "the update of card 1 was rolled back");
    assert_eq!(store.entity_state(EntityKind::Cards).await.unwrap(), EntityState::new(EntityKind::Cards));
    assert_eq!(store.unseen(EntityKind::Cards, 5, &Scope::All).await.unwrap(), vec![1, 2, 3], "no sweep marks");
    assert_eq!(store.card_tag_ids(500).await.unwrap(), Vec::<i64>::new());
}

#[tokio::test]
async fn large_id_lists_are_one_statement() {
    let store = SqliteStore::in_memory().unwrap();
    store.migrate().await.unwrap();
    for first in (1..=3000).step_by(1000) {
        store.apply_page(&page(Batch::Cards(fixtures::cards(first, 1000, 1 + first / 1000, 100)))).await.unwrap();
    }
    let parents: Vec<i64> = (0..20_000).collect();
    assert_eq!(store.unseen(EntityKind::Cards, 1, &Scope::Parents(parents)).await.unwrap().len(), 3000);
    let ids: Vec<i64> = (1..=50_000).collect();
    assert_eq!(store.existing_ids(EntityKind::Cards, &ids).await.unwrap().len(), 3000);
    assert_eq!(store.mark_deleted(EntityKind::Cards, &ids, Utc::now()).await.unwrap(), 3000);
    // Scope on a table without a parent column matches nothing, like the memory store.
    assert!(store.unseen(EntityKind::Users, 1, &Scope::Parents(vec![1])).await.unwrap().is_empty());
}

#[tokio::test]
async fn updates_write_changed_columns_and_keep_indexes_consistent() {
    let store = SqliteStore::in_memory().unwrap();
    store.migrate().await.unwrap();
    store.apply_page(&page(Batch::Cards(fixtures::cards(1, 50, 10, 100)))).await.unwrap();
    // Move some cards, rename others, delete one, and clear a JSON column.
    let mut changed = Vec::new();
    for id in 1..=50 {
        let mut j = fixtures::card_json(id, 10, 200, 2);
        match id % 4 {
            0 => j["column_id"] = serde_json::json!(4242),
            1 => j["title"] = serde_json::json!(format!("renamed {id}")),
            2 => j["properties"] = serde_json::json!({}),
            _ => j["condition"] = serde_json::json!(3),
        }
        changed.push(<kaiten_sync::kaiten_client::Card as kaiten_sync::kaiten_client::Record>::from_value(j).unwrap());
    }
    let batch = Batch::Cards(changed);
    let outcome = store.apply_page(&page(batch.clone())).await.unwrap();
    assert_eq!(outcome.updated, 50);
    for row in batch.rows() {
        let stored = store.get(EntityKind::Cards, row.id).await.unwrap().unwrap();
        assert_eq!(stored.values, row.values, "card {}", row.id);
        assert_eq!(&stored.raw, row.raw);
        assert_eq!(stored.deleted_at.is_some(), row.deleted);
    }
    let (check, moved, deleted): (String, i64, i64) = store
        .with_connection(|c| {
            Ok((
                c.query_row("PRAGMA integrity_check", [], |r| r.get(0))?,
                c.query_row("SELECT count(*) FROM cards INDEXED BY cards_column_id WHERE column_id = 4242", [], |r| {
                    r.get(0)
                })?,
                c.query_row("SELECT count(*) FROM cards WHERE deleted_at IS NOT NULL", [], |r| r.get(0))?,
            ))
        })
        .await
        .unwrap();
    assert_eq!((check.as_str(), moved, deleted), ("ok", 12, 12));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_opening_and_migrating_at_once_all_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("race.db");
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let path = path.clone();
        tasks.push(tokio::spawn(async move {
            let store = tokio::task::spawn_blocking(move || SqliteStore::open(&path)).await.unwrap()?;
            store.migrate().await?;
            Ok::<_, StoreError>(Arc::new(store))
        }));
    }
    let mut stores: Vec<Arc<SqliteStore>> = Vec::new();
    for task in tasks {
        stores.push(task.await.unwrap().expect("open and migrate"));
    }
    assert_eq!(stores[0].schema_version().await.unwrap(), Some(latest_version()));

    // Many pages at once through several handles: all committed, none lost.
    let mut writes = Vec::new();
    for (i, store) in stores.iter().cycle().take(16).enumerate() {
        let store: Arc<dyn Store> = store.clone();
        writes.push(tokio::spawn(async move {
            let first = 1 + i as i64 * 50;
            store.apply_page(&page(Batch::Cards(fixtures::cards(first, 50, 10, 100)))).await
        }));
    }
    for write in writes {
        assert_eq!(write.await.unwrap().unwrap().inserted, 50);
    }
    assert_eq!(stores[3].ids(EntityKind::Cards, false).await.unwrap().len(), 800);
}

/// Version 3 fills `card_members` from the cards already stored with their members, exactly as the
/// page path parses them (here: a store taken back to before version 3, then migrated again).
#[tokio::test]
async fn card_members_migration_fills_the_table_like_the_page_path() {
    let dir = tempfile::tempdir().unwrap();
    let store = migrated(&dir.path().join("k.db")).await;
    store.apply_page(&page(Batch::Cards(fixtures::cards_with_member_shapes()))).await.unwrap();
    let mut written = Vec::new();
    for id in 1..=6 {
        written.push(store.card_members(id).await.unwrap());
    }
    assert_eq!(written[0].len(), 5, "{written:?}");
    store
        .with_connection(|c| {
            c.execute_batch("DROP TABLE card_members; DELETE FROM schema_migrations WHERE version = 3")
        })
        .await
        .unwrap();
    store.migrate().await.expect("version 3 applied again");
    for (id, members) in (1..=6).zip(&written) {
        assert_eq!(&store.card_members(id).await.unwrap(), members, "card {id}");
    }
}

/// A lock whose holder is a process of this host that has exited is taken over at once, whatever
/// the stale timeout; a holder on another host keeps it until its heartbeat goes stale.
#[tokio::test]
async fn a_lock_of_a_process_gone_from_this_host_is_taken_over_at_once() {
    use kaiten_sync::holder::local_host;
    let dir = tempfile::tempdir().unwrap();
    let store = migrated(&dir.path().join("k.db")).await;
    let long = Duration::from_secs(24 * 3600);
    let mut child = std::process::Command::new("true").spawn().expect("`true` runs");
    let dead_pid = child.id();
    child.wait().unwrap();

    let other_host = "otherhost:1:x";
    assert_eq!(store.try_lock(other_host, long).await.unwrap(), LockAttempt::Acquired);
    assert!(
        matches!(store.try_lock("me", long).await.unwrap(), LockAttempt::Held(info) if info.holder == other_host),
        "a holder on another host waits for the stale timeout"
    );
    store.release_lock(other_host).await.unwrap();

    // A holder that is this very process is alive.
    let alive = format!("{}:{}:x", local_host(), std::process::id());
    assert_eq!(store.try_lock(&alive, long).await.unwrap(), LockAttempt::Acquired);
    assert!(matches!(store.try_lock("me", long).await.unwrap(), LockAttempt::Held(info) if info.holder == alive));
    store.release_lock(&alive).await.unwrap();

    let dead = format!("{}:{dead_pid}:x", local_host());
    assert_eq!(store.try_lock(&dead, long).await.unwrap(), LockAttempt::Acquired);
    if !std::path::Path::new("/proc/self").exists() {
        return; // without procfs liveness cannot be told, and the lock waits for its heartbeat
    }
    assert_eq!(store.try_lock("me", long).await.unwrap(), LockAttempt::Acquired, "the dead holder's lock is taken");
    assert!(!store.heartbeat_lock(&dead).await.unwrap(), "the dead holder no longer holds it");
    assert!(matches!(store.try_lock(&dead, long).await.unwrap(), LockAttempt::Held(info) if info.holder == "me"));
}

/// The indexes of `cards` (name and definition), and the definitions set aside in
/// `deferred_indexes`.
async fn card_indexes(store: &SqliteStore) -> (Vec<(String, String)>, usize) {
    store
        .with_connection(|c| {
            let mut stmt = c.prepare(
                "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'cards' AND sql IS NOT NULL \
                 ORDER BY name",
            )?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            let indexes = rows.collect::<Result<Vec<(String, String)>, _>>()?;
            let deferred: usize = c.query_row("SELECT count(*) FROM deferred_indexes", [], |r| r.get(0))?;
            Ok((indexes, deferred))
        })
        .await
        .unwrap()
}

#[tokio::test]
async fn a_first_full_listing_builds_the_card_indexes_once_at_its_end() {
    async fn links(store: &SqliteStore) -> (i64, i64) {
        store
            .with_connection(|c| {
                let count = |sql: &str| c.query_row(sql, [], |r| r.get::<_, i64>(0));
                Ok((count("SELECT count(*) FROM card_tags")?, count("SELECT count(*) FROM card_tags_pending")?))
            })
            .await
            .unwrap()
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kaiten.db");
    let store = migrated(&path).await;
    let (all, deferred) = card_indexes(&store).await;
    assert_eq!(deferred, 0);
    assert_eq!(all.len(), 9, "eight indexes and the partial one over deleted rows: {all:?}");

    // An incremental page into the empty table changes nothing.
    store.apply_page(&page(Batch::Cards(fixtures::cards(1, 10, 10, 100)))).await.unwrap();
    assert_eq!(card_indexes(&store).await, (all.clone(), 0));

    // A full listing (a sweep) into an empty table: the eight indexes wait, the partial one stays.
    let fresh = dir.path().join("fresh.db");
    let store = migrated(&fresh).await;
    let mut listing = page(Batch::Cards(fixtures::cards(1, 100, 10, 100)));
    listing.sweep = Some(1);
    store.apply_page(&listing).await.unwrap();
    let (during, deferred) = card_indexes(&store).await;
    assert_eq!(deferred, 8);
    assert_eq!(during.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), vec!["cards_deleted_at"]);
    // Its next pages find the table filled: nothing more to set aside, and reads work meanwhile.
    let mut next = page(Batch::Cards(fixtures::cards(101, 100, 10, 100)));
    next.sweep = Some(1);
    store.apply_page(&next).await.unwrap();
    assert_eq!(card_indexes(&store).await.1, 8);
    assert_eq!(store.ids(EntityKind::Cards, false).await.unwrap().len(), 200);
    assert_eq!(store.unseen(EntityKind::Cards, 1, &Scope::Parents(vec![10])).await.unwrap(), Vec::<i64>::new());
    // Tag links wait in `card_tags_pending`, appended; the store's reads see them meanwhile. A card
    // listed again (windows overlap), newer and with other tags, keeps only its newest links.
    let mut again = fixtures::card_json(7, 10, 200, 2);
    again["tag_ids"] = serde_json::json!([9]);
    let mut overlap = page(Batch::Cards(vec![kaiten_sync::kaiten_client::Record::from_value(again).unwrap()]));
    overlap.sweep = Some(1);
    assert_eq!(store.apply_page(&overlap).await.unwrap().updated, 1);
    assert_eq!(links(&store).await, (0, 399), "two links a card, one for card 7");
    assert_eq!(store.card_tag_ids(7).await.unwrap(), vec![9]);
    assert_eq!(store.card_tag_ids(8).await.unwrap(), vec![1, 5]);

    // Killed before the end: the next `migrate` (every run starts with it) builds them.
    drop(store);
    let reopened = migrated(&fresh).await;
    assert_eq!(card_indexes(&reopened).await, (all.clone(), 0), "rebuilt with the same definitions");
    assert_eq!(links(&reopened).await, (399, 0), "the links moved with them");
    assert_eq!(reopened.card_tag_ids(7).await.unwrap(), vec![9]);

    // The normal end of a listing: the card state is saved, and the indexes are built then.
    let third = dir.path().join("third.db");
    let store = migrated(&third).await;
    store.apply_page(&listing).await.unwrap();
    assert_eq!(card_indexes(&store).await.1, 8);
    store.save_entity_state(&EntityState::new(EntityKind::Cards)).await.unwrap();
    assert_eq!(card_indexes(&store).await, (all, 0));
    assert_eq!(links(&store).await, (200, 0));
    let board_cards = store
        .with_connection(|c| c.query_row("SELECT count(*) FROM cards WHERE board_id = 10", [], |r| r.get::<_, i64>(0)))
        .await
        .unwrap();
    assert_eq!(board_cards, 100);
}

/// A record stored under another spelling of its JSON (a mirror written by a release that stored
/// re-serialised JSON) gets Kaiten's text once, without counting as an update; from then on an
/// unchanged listing compares texts only and writes nothing.
#[tokio::test]
async fn a_respelled_record_takes_kaitens_text_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.db");
    let store = migrated(&path).await;
    use kaiten_sync::kaiten_client::Record;
    let from_text = |text: &str| {
        kaiten_sync::kaiten_client::Card::from_raw(serde_json::value::RawValue::from_string(text.to_owned()).unwrap())
            .unwrap()
    };
    let sorted = r#"{"board_id":10,"id":1,"title":"T","updated":"2025-01-01T00:00:00Z"}"#;
    let kaitens = r#"{"id": 1, "title": "T", "updated": "2025-01-01T00:00:00Z", "board_id": 10}"#;
    assert_eq!(store.apply_page(&page(Batch::Cards(vec![from_text(sorted)]))).await.unwrap().inserted, 1);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let stored = || -> (String, String) {
        conn.query_row("SELECT raw, synced_at FROM cards WHERE id = 1", [], |r| Ok((r.get(0)?, r.get(1)?))).unwrap()
    };
    let changes = || -> i64 { conn.query_row("PRAGMA data_version", [], |r| r.get(0)).unwrap() };
    let (text, synced_at) = stored();
    assert_eq!(text, sorted);

    let mut again = page(Batch::Cards(vec![from_text(kaitens)]));
    again.synced_at += chrono::Duration::seconds(60);
    assert_eq!(store.apply_page(&again).await.unwrap().unchanged, 1);
    assert_eq!(stored(), (kaitens.to_owned(), synced_at.clone()), "Kaiten's text, the old synced_at");

    let version = changes();
    again.synced_at += chrono::Duration::seconds(60);
    assert_eq!(store.apply_page(&again).await.unwrap().unchanged, 1);
    assert_eq!(changes(), version, "the second listing in Kaiten's spelling writes nothing");
}

/// A database the store creates gets 16 KiB pages (several card rows a page); one created before
/// keeps its own page size; a page size SQLite cannot use is refused, named.
#[tokio::test]
async fn new_databases_get_16_kib_pages_and_existing_ones_keep_theirs() {
    async fn page_size(store: &SqliteStore) -> i64 {
        store.with_connection(|c| c.query_row("PRAGMA page_size", [], |r| r.get::<_, i64>(0))).await.unwrap()
    }
    let dir = tempfile::tempdir().unwrap();
    let new = migrated(&dir.path().join("new.db")).await;
    assert_eq!(page_size(&new).await, 16384);

    let old_path = dir.path().join("old.db");
    rusqlite::Connection::open(&old_path)
        .unwrap()
        .execute_batch("PRAGMA page_size = 4096; CREATE TABLE t (x)")
        .unwrap();
    let old = migrated(&old_path).await;
    assert_eq!(page_size(&old).await, 4096, "an existing database keeps its page size");
    old.apply_page(&page(Batch::Cards(fixtures::cards(1, 5, 10, 100)))).await.unwrap();

    let small = SqliteStore::open_with(dir.path().join("s.db"), SqliteOptions::default().page_size(1024)).unwrap();
    small.migrate().await.unwrap();
    assert_eq!(page_size(&small).await, 1024);
    for bad in [0, 1000, 131072] {
        let err =
            SqliteStore::open_with(dir.path().join("bad.db"), SqliteOptions::default().page_size(bad)).unwrap_err();
        assert!(err.to_string().contains(&format!("page size {bad} is not a power of two")), "{err}");
    }
}
