//! `kiln keys` and `kiln serve` with API keys, end to end, on every database backend (SQLite
//! always; PostgreSQL when `KILN_TEST_POSTGRES_URL` is set, required in CI).

use kiln_core::testing::{write_tiny_bert, TinyBertSpec};
use kiln_store::testing::TestDatabase;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

fn kiln() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kiln"));
    c.env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .env_remove("KILN_DATABASE_URL");
    c
}

fn databases() -> Vec<TestDatabase> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(TestDatabase::all())
}

/// Runs `kiln keys ARGS --database-url URL`, asserting success; returns stdout.
fn keys(url: &str, args: &[&str]) -> String {
    let out = kiln()
        .arg("keys")
        .args(args)
        .args(["--database-url", url])
        .output()
        .unwrap();
    assert_success(&out, args);
    String::from_utf8(out.stdout).unwrap()
}

fn assert_success(out: &Output, what: &[&str]) {
    assert!(
        out.status.success(),
        "kiln keys {what:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn keys_json(url: &str, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    serde_json::from_str(&keys(url, &all)).unwrap()
}

#[test]
fn keys_are_created_listed_revoked_and_reported() {
    for db in databases() {
        eprintln!("backend: {}", db.backend);
        let url = db.url.as_str();
        let a = keys_json(
            url,
            &["create", "--name", "alice", "--rpm", "60", "--tpm", "1000"],
        );
        let b = keys_json(url, &["create", "--name", "bob", "--max-concurrent", "2"]);
        let key_a = a["key"].as_str().unwrap();
        assert!(
            key_a.starts_with("kiln-") && key_a.len() >= 5 + 12 + 1 + 64,
            "{key_a}"
        );
        assert_ne!(a["key"], b["key"]);

        let listed = keys_json(url, &["list"]);
        let listed = listed.as_array().unwrap();
        assert_eq!(listed.len(), 2);
        let alice = listed.iter().find(|k| k["name"] == "alice").unwrap();
        assert_eq!(alice["id"], a["id"]);
        assert_eq!(alice["limits"]["requests_per_minute"], 60);
        assert_eq!(alice["limits"]["tokens_per_minute"], 1000);
        assert_eq!(alice["limits"]["max_concurrent"], Value::Null);
        assert!(alice.get("key").is_none(), "list must never show secrets");
        let text = keys(url, &["list"]);
        assert!(!text.contains(key_a));
        assert!(text.contains("alice") && text.contains("active"));

        let out = keys(url, &["revoke", a["id"].as_str().unwrap()]);
        assert!(out.contains("revoked"), "{out}");
        let listed = keys_json(url, &["list"]);
        let alice = listed
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["name"] == "alice")
            .unwrap()
            .clone();
        assert!(alice["revoked_at"].is_i64());
        assert!(keys(url, &["list"]).contains("revoked"));

        assert_eq!(keys_json(url, &["usage"]), json!([]));

        // Errors are clear and fail the command.
        let out = kiln()
            .args(["keys", "revoke", "000000000000", "--database-url", url])
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("no API key has the id"));
        let out = kiln()
            .args([
                "keys",
                "create",
                "--name",
                "z",
                "--rpm",
                "0",
                "--database-url",
                url,
            ])
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("at least 1"));
    }
}

#[test]
fn without_a_url_the_database_is_kiln_db_in_the_working_directory() {
    let dir = tempfile::tempdir().unwrap();
    let out = kiln()
        .args(["keys", "create", "--name", "local"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_success(&out, &["create"]);
    let key = String::from_utf8(out.stdout).unwrap();
    let mut db = std::fs::read(dir.path().join("kiln.db")).expect("kiln.db created");
    db.extend(std::fs::read(dir.path().join("kiln.db-wal")).unwrap_or_default());
    // Only the hash is in the files.
    assert!(!String::from_utf8_lossy(&db).contains(key.trim()));
    let out = kiln()
        .args(["keys", "list"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("local"));
}

/// A running `kiln serve`, killed on drop.
struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(model: &Path, extra: &[&str]) -> Server {
    let mut child = kiln()
        .args(["serve", "--port", "0", "--offline", "--model"])
        .arg(model)
        .args(extra)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let port = loop {
        let line = lines
            .next()
            .expect("kiln serve exited before listening")
            .unwrap();
        if let Some(rest) = line.split("listening on http://").nth(1) {
            let addr = rest.split_whitespace().next().unwrap();
            break addr.rsplit(':').next().unwrap().parse().unwrap();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    Server { child, port }
}

fn http(port: u16, path: &str, key: Option<&str>, body: Option<&Value>) -> (u16, Value) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let method = if body.is_empty() { "GET" } else { "POST" };
    let auth = key
        .map(|k| format!("Authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status = resp[9..12].parse().unwrap();
    let payload = resp.split_once("\r\n\r\n").unwrap().1;
    (
        status,
        serde_json::from_str(payload).unwrap_or(Value::String(payload.into())),
    )
}

#[test]
fn serve_enforces_keys_and_records_usage_that_survives_shutdown() {
    let model = tempfile::tempdir().unwrap();
    write_tiny_bert(model.path(), &TinyBertSpec::default()).unwrap();
    let name = model
        .path()
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    for db in databases() {
        eprintln!("backend: {}", db.backend);
        let url = db.url.as_str();
        let created = keys_json(url, &["create", "--name", "svc"]);
        let key = created["key"].as_str().unwrap();
        let mut server = serve(model.path(), &["--database-url", url]);
        let body = json!({"model": name, "input": "hello there"});
        let (status, err) = http(server.port, "/v1/embeddings", None, Some(&body));
        assert_eq!(status, 401, "{err}");
        assert_eq!(err["error"]["code"], "invalid_api_key");
        let (status, _) = http(
            server.port,
            "/v1/embeddings",
            Some("kiln-wrong"),
            Some(&body),
        );
        assert_eq!(status, 401);
        let (status, _) = http(server.port, "/health", None, None);
        assert_eq!(status, 200);
        let mut prompt_tokens = 0;
        for _ in 0..3 {
            let (status, resp) = http(server.port, "/v1/embeddings", Some(key), Some(&body));
            assert_eq!(status, 200, "{resp}");
            prompt_tokens += resp["usage"]["prompt_tokens"].as_u64().unwrap();
        }
        // SIGTERM: the server stops cleanly and writes the usage it still held.
        let pid = server.child.id().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
        assert!(server.child.wait().unwrap().success());

        let usage = keys_json(url, &["usage", "--key", created["id"].as_str().unwrap()]);
        let rows = usage.as_array().unwrap();
        assert_eq!(rows.len(), 1, "{usage}");
        assert_eq!(rows[0]["requests"], 3);
        assert_eq!(rows[0]["prompt_tokens"], prompt_tokens);
        assert_eq!(rows[0]["completion_tokens"], 0);
        assert_eq!(rows[0]["name"], "svc");
    }
}

#[test]
fn serve_with_require_auth_and_no_keys_refuses_everything_but_health() {
    let model = tempfile::tempdir().unwrap();
    write_tiny_bert(model.path(), &TinyBertSpec::default()).unwrap();
    let db = TestDatabase::sqlite();
    let server = serve(
        model.path(),
        &[
            "--database-url",
            &db.url,
            "--require-auth",
            "--metrics-require-auth",
        ],
    );
    assert_eq!(http(server.port, "/v1/models", None, None).0, 401);
    assert_eq!(http(server.port, "/metrics", None, None).0, 401);
    assert_eq!(http(server.port, "/health", None, None).0, 200);
}
