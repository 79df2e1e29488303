//! A throwaway BIND 9 primary for RFC 2136 tests.
//!
//! Starts `named -g` (foreground, logs to stderr) on 127.0.0.1 and a free port with a
//! fresh hmac-sha256 TSIG key, two primary zones that accept updates and transfers signed
//! by that key, and kills it on drop. When `named` is missing the tests skip, unless
//! `CI=true`: then missing BIND is a failure, so CI cannot silently stop testing.

#![allow(dead_code)]

use std::io::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;

pub const ZONES: [&str; 3] = ["privatelink.eastus2.azure.elastic-cloud.com", "example.internal", BULK_ZONE];
/// A zone big enough that BIND sends its AXFR in several messages (each TSIG-signed,
/// chained to the previous MAC), so `list` is tested beyond the one-message case.
pub const BULK_ZONE: &str = "bulk.internal";
pub const BULK_HOSTS: usize = 3000;
pub const KEY_NAME: &str = "autopilot-key";

pub struct Bind {
    child: Child,
    dir: tempfile::TempDir,
    pub port: u16,
    pub secret: String,
}

fn find_named() -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join("named")).collect())
        .unwrap_or_default();
    candidates.extend(["/usr/sbin/named", "/usr/local/sbin/named", "/sbin/named"].map(PathBuf::from));
    candidates.into_iter().find(|p| p.is_file())
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
    Some(Bind::start_with(&named))
}

/// A loopback port free for both TCP and UDP (named listens on both).
fn free_port() -> u16 {
    loop {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind ephemeral port");
        let port = l.local_addr().expect("local addr").port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

impl Bind {
    fn start_with(named: &Path) -> Bind {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().display().to_string();
        let port = free_port();
        let key: Vec<u8> = (0..32).map(|_| fastrand::u8(..)).collect();
        let secret = base64::engine::general_purpose::STANDARD.encode(key);
        let mut conf = format!(
            "key \"{KEY_NAME}\" {{ algorithm hmac-sha256; secret \"{secret}\"; }};\n\
             options {{\n  directory \"{d}\";\n  listen-on port {port} {{ 127.0.0.1; }};\n  listen-on-v6 {{ none; }};\n\
               pid-file none;\n  recursion no;\n  dnssec-validation no;\n  notify no;\n  allow-query {{ any; }};\n\
               session-keyfile \"{d}/session.key\";\n  managed-keys-directory \"{d}\";\n}};\n\
             controls {{ }};\n"
        );
        for (i, zone) in ZONES.iter().enumerate() {
            let file = format!("{d}/zone{i}.db");
            let mut f = std::fs::File::create(&file).expect("zone file");
            write!(
                f,
                "$TTL 300\n@ IN SOA ns.{zone}. hostmaster.{zone}. 1 3600 600 86400 300\n@ IN NS ns.{zone}.\nns IN A 127.0.0.1\n"
            )
            .expect("write zone");
            if *zone == BULK_ZONE {
                for i in 0..BULK_HOSTS {
                    writeln!(f, "h{i} IN A 10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256).expect("write zone");
                }
            }
            conf.push_str(&format!(
                "zone \"{zone}\" {{ type primary; file \"{file}\"; allow-update {{ key \"{KEY_NAME}\"; }}; \
                 allow-transfer {{ key \"{KEY_NAME}\"; }}; }};\n"
            ));
        }
        let conf_path = dir.path().join("named.conf");
        std::fs::write(&conf_path, conf).expect("write named.conf");
        let log = std::fs::File::create(dir.path().join("named.log")).expect("log file");
        // Running as root, named keeps root unless told `-u`; as another user it just runs
        // as that user, which is enough for a high port and files in our temp dir.
        let child = Command::new(named)
            .arg("-g")
            .arg("-c")
            .arg(&conf_path)
            .arg("-n")
            .arg("1")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn named");
        let mut bind = Bind { child, dir, port, secret };
        bind.wait_ready();
        bind
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("named exited early ({status}):\n{}", self.log());
            }
            if ZONES.iter().all(|z| self.dig(z, "SOA").map(|s| !s.trim().is_empty()).unwrap_or(false)) {
                return;
            }
            if Instant::now() > deadline {
                panic!("named did not answer within 20 s:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("named.log")).unwrap_or_default()
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

impl Drop for Bind {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
