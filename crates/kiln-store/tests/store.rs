//! The key store against every backend: SQLite always, PostgreSQL when `KILN_TEST_POSTGRES_URL`
//! is set (required when `CI` is set). Each test body runs once per backend on a fresh database.

use kiln_store::testing::TestDatabase;
use kiln_store::{ApiKeySecret, KeyLimits, KeyStore, StoreError, UsageDelta};

async fn for_each_backend<F, Fut>(body: F)
where
    F: Fn(KeyStore) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for db in TestDatabase::all().await {
        eprintln!("backend: {}", db.backend);
        let store = KeyStore::connect(&db.url).await.unwrap();
        body(store).await;
        drop(db);
    }
}

#[tokio::test]
async fn created_keys_verify_until_revoked_and_are_stored_only_as_hashes() {
    for_each_backend(|store| async move {
        assert!(!store.has_keys().await.unwrap());
        let limits = KeyLimits {
            requests_per_minute: Some(5),
            tokens_per_minute: None,
            max_concurrent: Some(2),
        };
        let a = store.create_key("alice", limits).await.unwrap();
        let b = store.create_key("bob", KeyLimits::default()).await.unwrap();
        assert!(store.has_keys().await.unwrap());

        let found = store
            .verify(&a.secret)
            .await
            .unwrap()
            .expect("alice verifies");
        assert_eq!(found.name, "alice");
        assert_eq!(found.limits, limits);
        assert_eq!(
            store.verify(&b.secret).await.unwrap().unwrap().id,
            b.record.id
        );

        // The database holds the SHA-256 of the key, never the key.
        let stored = store.stored_hash(&a.record.id).await.unwrap().unwrap();
        assert_eq!(stored, a.secret.hash());
        assert!(!stored.contains(a.secret.expose()));
        assert_eq!(stored.len(), 64);

        // Same id, wrong secret: refused.
        let forged = format!("kiln-{}-{}", a.record.id, "0".repeat(64));
        assert!(store
            .verify(&ApiKeySecret::from_presented(&forged))
            .await
            .unwrap()
            .is_none());
        assert!(store
            .verify(&ApiKeySecret::from_presented("nonsense"))
            .await
            .unwrap()
            .is_none());

        let listed = store.list_keys().await.unwrap();
        let mut names: Vec<_> = listed.iter().map(|k| k.name.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["alice", "bob"]);

        let revoked = store.revoke_key(&a.record.id).await.unwrap();
        assert!(revoked.revoked_at.is_some());
        assert!(store.verify(&a.secret).await.unwrap().is_none());
        assert!(store.verify(&b.secret).await.unwrap().is_some());
        // Revoking again keeps the first time; all keys revoked still counts as "has keys".
        let again = store.revoke_key(&a.record.id).await.unwrap();
        assert_eq!(again.revoked_at, revoked.revoked_at);
        store.revoke_key(&b.record.id).await.unwrap();
        assert!(store.has_keys().await.unwrap());

        assert!(matches!(
            store.revoke_key("000000000000").await,
            Err(StoreError::UnknownKey(_))
        ));
        assert!(matches!(
            store.create_key(" ", KeyLimits::default()).await,
            Err(StoreError::EmptyName)
        ));
        assert!(matches!(
            store
                .create_key(
                    "zero",
                    KeyLimits {
                        requests_per_minute: Some(0),
                        ..KeyLimits::default()
                    }
                )
                .await,
            Err(StoreError::InvalidLimit { .. })
        ));
    })
    .await;
}

#[tokio::test]
async fn usage_accumulates_per_key_per_day() {
    for_each_backend(|store| async move {
        let a = store.create_key("a", KeyLimits::default()).await.unwrap();
        let b = store.create_key("b", KeyLimits::default()).await.unwrap();
        let one = |p, c| UsageDelta {
            requests: 1,
            prompt_tokens: p,
            completion_tokens: c,
        };
        store
            .record_usage(&a.record.id, "2026-11-23", one(10, 0))
            .await
            .unwrap();
        store
            .record_usage(&a.record.id, "2026-11-24", one(3, 7))
            .await
            .unwrap();
        store
            .record_usage(&a.record.id, "2026-11-24", one(4, 8))
            .await
            .unwrap();
        store
            .record_usage(&b.record.id, "2026-11-24", one(1, 1))
            .await
            .unwrap();

        let rows = store.usage(Some(&a.record.id)).await.unwrap();
        let got: Vec<_> = rows
            .iter()
            .map(|r| {
                (
                    r.day.as_str(),
                    r.requests,
                    r.prompt_tokens,
                    r.completion_tokens,
                )
            })
            .collect();
        assert_eq!(got, [("2026-11-23", 1, 10, 0), ("2026-11-24", 2, 7, 15)]);
        assert!(rows.iter().all(|r| r.name == "a"));
        assert_eq!(store.usage(None).await.unwrap().len(), 3);
    })
    .await;
}

#[tokio::test]
async fn a_fresh_sqlite_file_is_created_and_migrated_and_reopens_with_its_keys() {
    let db = TestDatabase::sqlite();
    let path = db.sqlite_path().unwrap();
    assert!(!path.exists());
    let store = KeyStore::connect(&db.url).await.unwrap();
    assert!(path.exists());
    let key = store
        .create_key("kept", KeyLimits::default())
        .await
        .unwrap();
    store.close().await;
    // Connecting again applies no migration twice and finds the key.
    let store = KeyStore::connect(&db.url).await.unwrap();
    assert!(store.verify(&key.secret).await.unwrap().is_some());
    // The files (database and any WAL) hold the hash, never the key itself.
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.extend(std::fs::read(path.with_extension("db-wal")).unwrap_or_default());
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.contains(&key.secret.hash()));
    assert!(!text.contains(key.secret.expose()));
}

#[tokio::test]
async fn unsupported_urls_are_refused_with_a_clear_error() {
    let err = KeyStore::connect("mysql://u:secret@h/db")
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("sqlite://") && !msg.contains("secret"),
        "{msg}"
    );
}
