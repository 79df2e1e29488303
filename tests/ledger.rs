//! The registration ledger: one behaviour suite (round trip, versions, insert-only create,
//! conditional replace and forget) run against SQLite (laptop, demo), the fake Table
//! service and Azurite (Microsoft's Azure Storage emulator), plus the Table-only failure
//! modes the fake can inject and paging with and without `NextRowKey`.
//!
//! Azurite: `.ci/run` starts `azurite-table` over HTTPS with `--oauth basic` and exports
//! `AUTOPILOT_TEST_AZURITE_TABLE` (the account URL) and `AUTOPILOT_TEST_AZURITE_CA` (the
//! PEM of the test CA that signed its certificate). Without them, the tests start their
//! own `azurite-table` if it is on PATH. Otherwise they skip with a note, except under
//! `CI=true`, where they fail. The client is the production `TableLedger` with its bearer
//! token (an unsigned JWT, which `--oauth basic` accepts once issuer, audience and
//! lifetime check out); only the HTTP client is given the test CA as an extra root.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine;
use private_link_autopilot::arm::Secret;
use private_link_autopilot::arm::credential::StaticToken;
use private_link_autopilot::effects::vendors::VendorEndpoint;
use private_link_autopilot::effects::vendors::ledger::{Ledger, LedgerError, SqliteLedger, TableLedger, Version};
use private_link_autopilot::sandbox::fake_table::FakeTableService;

const TOKEN: &str = "storage-token-7f3a";

fn ep(n: usize) -> VendorEndpoint {
    VendorEndpoint {
        pe_id: format!("/subscriptions/S/resourceGroups/RG/providers/Microsoft.Network/privateEndpoints/PE-{n:04}"),
        pe_name: format!("PE-{n:04}"),
        resource_guid: Some(format!("guid-{n}")),
        subscription_id: "S".into(),
        location: "eastus2".into(),
        alias: Some("a.b.eastus2.azure.privatelinkservice".into()),
        targets: vec!["svc-1".into()],
    }
}

fn conflict<T: std::fmt::Debug>(r: Result<T, LedgerError>, what: &str) {
    match r {
        Err(e @ LedgerError::Conflict(_)) => assert!(e.is_transient(), "{what}: a conflict is retried"),
        other => panic!("{what}: expected a conflict, got {other:?}"),
    }
}

/// The behaviour every ledger has.
async fn behaves(l: &dyn Ledger) {
    let e = ep(1);
    let v1 = l.record("elastic", &e, None).await.unwrap();
    conflict(l.record("elastic", &e, None).await, "create of an existing entry");
    l.record("zilliz", &ep(2), None).await.unwrap();
    let got = l.get("elastic", &e.pe_id.to_ascii_lowercase()).await.unwrap().expect("recorded");
    assert_eq!(got.endpoint, e, "round trip keeps ARM's casing and the targets");
    assert_eq!(got.version, v1, "get returns the version the write returned");
    assert!(got.recorded_at > 0);
    assert!(l.get("zilliz", &e.pe_id).await.unwrap().is_none());

    // Replace the version read; a second writer holding the same version loses.
    let mut moved = e.clone();
    moved.targets = vec!["svc-2".into()];
    let v2 = l.record("elastic", &moved, Some(&v1)).await.unwrap();
    assert_ne!(v2, v1, "every write makes a new version");
    conflict(l.record("elastic", &e, Some(&v1)).await, "replace of a stale version");
    assert_eq!(l.get("elastic", &e.pe_id).await.unwrap().unwrap().endpoint.targets, vec!["svc-2".to_string()]);

    // Forget only erases the version that was read.
    conflict(l.forget("elastic", &e.pe_id, &v1).await, "forget of a stale version");
    assert!(l.get("elastic", &e.pe_id).await.unwrap().is_some(), "a newer registration is never erased");
    l.forget("elastic", &e.pe_id, &v2).await.unwrap();
    l.forget("elastic", &e.pe_id, &v2).await.unwrap();
    assert!(l.get("elastic", &e.pe_id).await.unwrap().is_none());
    conflict(l.record("elastic", &e, Some(&v2)).await, "replace of a forgotten entry");

    // Created again: the old incarnation's version matches nothing.
    let v3 = l.record("elastic", &e, None).await.unwrap();
    assert_ne!(v3, v1);
    assert_ne!(v3, v2);
    conflict(l.forget("elastic", &e.pe_id, &v1).await, "forget with the old incarnation's version");
    conflict(l.forget("elastic", &e.pe_id, &Version::default()).await, "forget without a version");

    let all = l.list().await.unwrap();
    assert_eq!(all.iter().map(|r| r.vendor.as_str()).collect::<Vec<_>>(), vec!["elastic", "zilliz"]);
    let v = l.get("zilliz", &ep(2).pe_id).await.unwrap().unwrap().version;
    l.forget("zilliz", &ep(2).pe_id, &v).await.unwrap();
    assert_eq!(l.list().await.unwrap().len(), 1);
}

/// Two writers racing from the same read: exactly one wins each round.
async fn one_writer_wins(l: Arc<dyn Ledger>) {
    let e = ep(7);
    let v = l.record("clickhouse", &e, None).await.unwrap();
    let (a, b) = tokio::join!(l.record("clickhouse", &e, Some(&v)), l.record("clickhouse", &e, Some(&v)));
    assert_eq!([a.is_ok(), b.is_ok()].iter().filter(|ok| **ok).count(), 1, "{a:?} {b:?}");
    let e8 = ep(8);
    let (a, b) = tokio::join!(l.record("clickhouse", &e8, None), l.record("clickhouse", &e8, None));
    assert_eq!([a.is_ok(), b.is_ok()].iter().filter(|ok| **ok).count(), 1, "{a:?} {b:?}");
}

fn table(fake: &FakeTableService) -> TableLedger {
    TableLedger::new(&fake.base_url(), "vendorregistrations", Arc::new(StaticToken(Secret::new(TOKEN)))).unwrap()
}

#[tokio::test]
async fn sqlite_ledger_behaves() {
    behaves(&SqliteLedger::open_in_memory().unwrap()).await;
    one_writer_wins(Arc::new(SqliteLedger::open_in_memory().unwrap())).await;
}

#[tokio::test]
async fn fake_table_ledger_behaves() {
    let fake = FakeTableService::start(TOKEN, 1000).await.unwrap();
    behaves(&table(&fake)).await;
    let fake = FakeTableService::start(TOKEN, 1000).await.unwrap();
    one_writer_wins(Arc::new(table(&fake))).await;
}

/// A ledger file written before versions existed opens, reads, and is conditional after.
#[tokio::test]
async fn sqlite_ledger_upgrades_a_file_without_versions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("queue.db");
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(
            "CREATE TABLE vendor_registrations (vendor TEXT NOT NULL, endpoint_key TEXT NOT NULL,
             endpoint TEXT NOT NULL, recorded_at INTEGER NOT NULL, PRIMARY KEY (vendor, endpoint_key))",
        )
        .unwrap();
        let e = ep(3);
        c.execute(
            "INSERT INTO vendor_registrations VALUES ('elastic', ?1, ?2, 5)",
            rusqlite::params![e.pe_id.to_ascii_lowercase(), serde_json::to_string(&e).unwrap()],
        )
        .unwrap();
    }
    let l = SqliteLedger::open(&path).unwrap();
    let got = l.get("elastic", &ep(3).pe_id).await.unwrap().unwrap();
    let v = l.record("elastic", &ep(3), Some(&got.version)).await.unwrap();
    assert_ne!(v, got.version);
    conflict(l.forget("elastic", &ep(3).pe_id, &got.version).await, "stale version after the upgrade");
    l.forget("elastic", &ep(3).pe_id, &v).await.unwrap();
}

#[tokio::test]
async fn table_ledger_pages_through_2500_entries() {
    let fake = FakeTableService::start(TOKEN, 1000).await.unwrap();
    let l = table(&fake);
    for n in 0..2500 {
        l.record("clickhouse", &ep(n), None).await.unwrap();
    }
    assert_eq!(fake.entity_count("vendorregistrations"), 2500);
    let before = fake.requests();
    assert_eq!(l.list().await.unwrap().len(), 2500);
    assert_eq!(fake.requests() - before, 3, "three pages of 1,000");
}

/// The service may end a page with `x-ms-continuation-NextPartitionKey` alone; only its
/// absence ends the query (a client that wants both headers stops after one vendor).
#[tokio::test]
async fn table_ledger_pages_on_next_partition_key_alone() {
    let fake = FakeTableService::start(TOKEN, 1000).await.unwrap();
    fake.set_partition_only_continuation(true);
    let l = table(&fake);
    for (i, vendor) in ["clickhouse", "elastic", "zilliz"].into_iter().enumerate() {
        for n in 0..5 {
            l.record(vendor, &ep(i * 10 + n), None).await.unwrap();
        }
    }
    let before = fake.requests();
    let all = l.list().await.unwrap();
    assert_eq!(all.len(), 15, "every partition is read: {all:?}");
    assert_eq!(fake.requests() - before, 3, "one page per partition");
    assert_eq!(all.iter().filter(|r| r.vendor == "zilliz").count(), 5);
}

#[tokio::test]
async fn table_failures_are_classified_and_never_show_the_token() {
    let fake = FakeTableService::start(TOKEN, 1000).await.unwrap();
    let l = table(&fake);
    l.record("elastic", &ep(1), None).await.unwrap();
    fake.fail_next(503, 2);
    assert!(l.get("elastic", &ep(1).pe_id).await.unwrap().is_some(), "two 503s are retried inside the call");
    fake.fail_next(503, 5);
    let e = l.get("elastic", &ep(1).pe_id).await.unwrap_err();
    assert!(matches!(e, LedgerError::Unavailable(_)) && e.is_transient(), "{e}");
    fake.fail_next(403, 1);
    let e = l.get("elastic", &ep(1).pe_id).await.unwrap_err();
    assert!(matches!(e, LedgerError::Config(_)), "{e}");
    assert!(e.to_string().contains("Storage Table Data Contributor"), "{e}");
    let wrong =
        TableLedger::new(&fake.base_url(), "vendorregistrations", Arc::new(StaticToken(Secret::new("nope")))).unwrap();
    let e = wrong.list().await.unwrap_err();
    for text in [e.to_string(), format!("{e:?}"), format!("{wrong:?}")] {
        assert!(!text.contains(TOKEN) && !text.contains("nope"), "{text}");
    }
}

// ---------------------------------------------------------------- Azurite

/// A running Azurite Table service: its account URL and the CA its certificate chains to.
struct Azurite {
    url: String,
    ca_pem: Vec<u8>,
    /// Our own `azurite-table`, started through `sh`, which stops it when this stdin
    /// closes (that is, when the test process exits, however it exits).
    _own: Option<Mutex<(Child, ChildStdin)>>,
}

fn azurite() -> Option<&'static Azurite> {
    static AZURITE: OnceLock<Result<Azurite, String>> = OnceLock::new();
    match AZURITE.get_or_init(start_azurite) {
        Ok(a) => Some(a),
        Err(why) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("Azurite is required under CI=true (.ci/run starts it): {why}")
        }
        Err(why) => {
            eprintln!("skipping the Azurite ledger test: {why}");
            None
        }
    }
}

fn start_azurite() -> Result<Azurite, String> {
    if let Ok(url) = std::env::var("AUTOPILOT_TEST_AZURITE_TABLE") {
        let ca = std::env::var("AUTOPILOT_TEST_AZURITE_CA")
            .map_err(|_| "AUTOPILOT_TEST_AZURITE_TABLE is set but AUTOPILOT_TEST_AZURITE_CA is not".to_string())?;
        let ca_pem = std::fs::read(&ca).map_err(|e| format!("reading {ca}: {e}"))?;
        return Ok(Azurite { url, ca_pem, _own: None });
    }
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .any(|d| d.join("azurite-table").is_file());
    if !found {
        return Err(
            "azurite-table is not on PATH (npm install -g azurite) and AUTOPILOT_TEST_AZURITE_TABLE is unset".into()
        );
    }
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    make_certificates(dir.path())?;
    let port =
        std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map_err(|e| e.to_string())?.port();
    let script = format!(
        "azurite-table --tableHost 127.0.0.1 --tablePort {port} --inMemoryPersistence --oauth basic \
         --cert cert.pem --key key.pem --disableTelemetry & pid=$!; cat >/dev/null; kill $pid"
    );
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting azurite-table: {e}"))?;
    let stdin = child.stdin.take().ok_or("no stdin")?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("successfully started") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(30)).map_err(|_| "azurite-table did not start within 30 s".to_string())?;
    // Azurite has read its certificate and key: nothing in the folder is needed any more.
    let ca_pem = std::fs::read(dir.path().join("ca.pem")).map_err(|e| e.to_string())?;
    drop(dir);
    Ok(Azurite {
        url: format!("https://127.0.0.1:{port}/devstoreaccount1"),
        ca_pem,
        _own: Some(Mutex::new((child, stdin))),
    })
}

/// A throwaway CA and a certificate for 127.0.0.1 signed by it (openssl), so the client
/// verifies the emulator's TLS the normal way with one extra root.
fn make_certificates(dir: &Path) -> Result<(), String> {
    let run = |args: &[&str]| -> Result<(), String> {
        let out = Command::new("openssl").args(args).current_dir(dir).output().map_err(|e| format!("openssl: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!("openssl {}: {}", args[0], String::from_utf8_lossy(&out.stderr)))
        }
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=autopilot-test-ca",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign",
    ]);
    run(&ca)?;
    let mut req = vec!["req"];
    req.extend(ec);
    req.extend(["-keyout", "key.pem", "-out", "req.csr", "-subj", "/CN=127.0.0.1"]);
    run(&req)?;
    std::fs::File::create(dir.join("ext.cnf"))
        .and_then(|mut f| {
            f.write_all(
                b"subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=critical,CA:FALSE\n\
                  extendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\n",
            )
        })
        .map_err(|e| e.to_string())?;
    run(&[
        "x509",
        "-req",
        "-in",
        "req.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "cert.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ])
}

/// An Entra-shaped access token for Azure Storage. Azurite's `--oauth basic` checks the
/// issuer, the audience and the lifetime, not the signature.
fn storage_token(lifetime_secs: i64) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let b64 = |v: serde_json::Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let header = b64(serde_json::json!({"alg": "RS256", "typ": "JWT"}));
    let claims = b64(serde_json::json!({
        "aud": "https://storage.azure.com",
        "iss": "https://sts.windows.net/00000000-0000-0000-0000-00000000000a/",
        "iat": now - 120, "nbf": now - 120, "exp": now + lifetime_secs,
        "oid": "00000000-0000-0000-0000-0000000000bb",
    }));
    format!("{header}.{claims}.bm90LXNpZ25lZA")
}

fn azurite_ledger(a: &Azurite, token: String) -> TableLedger {
    let ca = reqwest::Certificate::from_pem(&a.ca_pem).expect("test CA");
    let http = TableLedger::client_builder().add_root_certificate(ca).build().unwrap();
    // A table per test: the tests share one emulator.
    let table = format!("ledger{}", fastrand::u64(..));
    TableLedger::with_client(&a.url, &table, Arc::new(StaticToken(Secret::new(token))), http).unwrap()
}

#[tokio::test]
async fn azurite_table_ledger_behaves() {
    let Some(a) = azurite() else { return };
    behaves(&azurite_ledger(a, storage_token(3600))).await;
    one_writer_wins(Arc::new(azurite_ledger(a, storage_token(3600)))).await;
}

/// More than one page (Azurite returns at most 1,000 entities per query page) across
/// three partitions.
#[tokio::test]
async fn azurite_table_ledger_pages() {
    let Some(a) = azurite() else { return };
    let l = Arc::new(azurite_ledger(a, storage_token(3600)));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for chunk in 0..8 {
        let l = l.clone();
        tasks.push(tokio::spawn(async move {
            for n in (chunk..1100).step_by(8) {
                let vendor = ["clickhouse", "elastic", "zilliz"][n % 3];
                l.record(vendor, &ep(n), None).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let all = l.list().await.unwrap();
    assert_eq!(all.len(), 1100, "listed in {:?}", started.elapsed());
    let mut keys: Vec<_> = all.iter().map(|r| (r.vendor.clone(), r.endpoint.pe_id.clone())).collect();
    keys.dedup();
    assert_eq!(keys.len(), 1100, "no entity twice");
}

/// Azurite's refusals map like the service's: an expired token is a configuration error
/// that names the role, and never shows the token.
#[tokio::test]
async fn azurite_refuses_an_expired_token() {
    let Some(a) = azurite() else { return };
    let token = storage_token(-60);
    let l = azurite_ledger(a, token.clone());
    let e = l.get("elastic", &ep(1).pe_id).await.unwrap_err();
    assert!(matches!(e, LedgerError::Config(_)), "{e}");
    assert!(!e.to_string().contains(&token) && !format!("{l:?}").contains(&token), "{e}");
}
