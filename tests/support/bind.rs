//! A throwaway BIND 9 primary for RFC 2136 tests.
//!
//! Wraps the library's `LocalBind` (a real `named` on a loopback port with a fresh TSIG
//! key) with the test zones, `dig` and `nsupdate`. When `named` is missing the tests skip, unless
//! `CI=true`: then missing BIND is a failure, so CI cannot silently stop testing.

#![allow(dead_code)]

use std::io::Write as _;
use std::net::SocketAddr;
use std::process::{Command, Stdio};

pub use autopilot_sandbox::bind::KEY_NAME;
use autopilot_sandbox::bind::{LocalBind, find_named};

pub const ZONES: [&str; 3] = ["privatelink.eastus2.azure.elastic-cloud.com", "example.internal", BULK_ZONE];
/// A zone big enough that BIND sends its AXFR in several messages (each TSIG-signed,
/// chained to the previous MAC), so `list` is tested beyond the one-message case.
pub const BULK_ZONE: &str = "bulk.internal";
pub const BULK_HOSTS: usize = 3000;

pub struct Bind {
    inner: LocalBind,
    pub port: u16,
    pub secret: String,
}

/// `None` (with a note) when BIND is not installed and we are not in CI.
pub fn start() -> Option<Bind> {
    let Some(named) = find_named() else {
        if std::env::var("CI").map(|v| v == "true").unwrap_or(false) {
            panic!("bind9 not installed: .ci/run must apt-get install bind9 bind9-dnsutils (CI=true, so not skipping)");
        }
        eprintln!("SKIP: `named` not found (apt-get install bind9 bind9-dnsutils); RFC 2136 tests did not run");
        return None;
    };
    let bulk = |zone: &str| {
        if zone != BULK_ZONE {
            return String::new();
        }
        (0..BULK_HOSTS).map(|i| format!("h{i} IN A 10.{}.{}.{}\n", i / 65536, (i / 256) % 256, i % 256)).collect()
    };
    let inner = LocalBind::start(&named, &ZONES, bulk).unwrap_or_else(|e| panic!("{e}"));
    Some(Bind { port: inner.port, secret: inner.secret.clone(), inner })
}

impl Bind {
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn log(&self) -> String {
        self.inner.log()
    }

    /// `dig @127.0.0.1 -p PORT name type +short` (TCP, one try).
    pub fn dig(&self, name: &str, rtype: &str) -> Option<String> {
        let out = Command::new("dig")
            .args(["@127.0.0.1", "-p", &self.port.to_string(), name, rtype, "+short", "+tcp", "+time=2", "+tries=1"])
            .output()
            .ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Applies an update with `nsupdate` signed by the test key (a "person" editing the zone).
    pub fn nsupdate(&self, commands: &str) {
        let script = format!("server 127.0.0.1 {}\n{commands}\nsend\n", self.port);
        let mut child = Command::new("nsupdate")
            .arg("-v")
            .arg("-y")
            .arg(format!("hmac-sha256:{KEY_NAME}:{}", self.secret))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn nsupdate");
        child.stdin.take().expect("stdin").write_all(script.as_bytes()).expect("write nsupdate script");
        let out = child.wait_with_output().expect("nsupdate");
        assert!(out.status.success(), "nsupdate failed: {}", String::from_utf8_lossy(&out.stderr));
    }
}
