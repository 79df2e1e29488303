//! Azurite (Microsoft's Azure Storage emulator) for the Table ledger tests: found through
//! `AUTOPILOT_TEST_AZURITE_TABLE` + `AUTOPILOT_TEST_AZURITE_CA` (what `.ci/run` exports),
//! else started once per test binary if `azurite-table` is on PATH, else the test skips
//! with a note, or fails under `CI=true`.
//!
//! It runs over HTTPS with `--oauth basic`, so the production `TableLedger` talks to it
//! with its bearer token (an unsigned JWT: basic mode checks issuer, audience and
//! lifetime, not the signature); only the HTTP client gets the test CA as an extra root.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use base64::Engine;
use private_link_autopilot::arm::Secret;
use private_link_autopilot::arm::credential::StaticToken;
use private_link_autopilot::effects::vendors::ledger::TableLedger;

/// A running Azurite Table service: its account URL and the CA its certificate chains to.
pub struct Azurite {
    url: String,
    ca_pem: Vec<u8>,
    /// Our own `azurite-table`, started through `sh`, which stops it when this stdin
    /// closes (that is, when the test process exits, however it exits).
    _own: Option<Mutex<(Child, ChildStdin)>>,
}

pub fn azurite() -> Option<&'static Azurite> {
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
pub fn storage_token(lifetime_secs: i64) -> String {
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

pub fn azurite_ledger(a: &Azurite, token: String) -> TableLedger {
    let ca = reqwest::Certificate::from_pem(&a.ca_pem).expect("test CA");
    let http = TableLedger::client_builder().add_root_certificate(ca).build().unwrap();
    // A table per test: the tests share one emulator.
    let table = format!("ledger{}", fastrand::u64(..));
    TableLedger::with_client(&a.url, &table, Arc::new(StaticToken(Secret::new(token))), http).unwrap()
}

/// The production lease store on Azurite, in a table of its own.
pub fn azurite_leases(a: &Azurite, token: String) -> private_link_autopilot::arm::lease::TableLeases {
    let ca = reqwest::Certificate::from_pem(&a.ca_pem).expect("test CA");
    let http = private_link_autopilot::arm::table::client_builder().add_root_certificate(ca).build().unwrap();
    let table = format!("leases{}", fastrand::u64(..));
    private_link_autopilot::arm::lease::TableLeases::with_client(
        &a.url,
        &table,
        Arc::new(StaticToken(Secret::new(token))),
        http,
    )
    .unwrap()
}
