//! A throwaway BIND 9 primary on loopback, for the demo and the RFC 2136 tests.
//!
//! Starts `named -g` on 127.0.0.1 and a free port with a fresh hmac-sha256 TSIG key and
//! primary zones that accept updates and transfers signed by that key; kills it and
//! removes its directory on drop. Using the real server (not a fake) is the point:
//! dynamic update, prerequisites and TSIG are exactly what enterprises run.

use std::io::Write as _;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;

pub const KEY_NAME: &str = "autopilot-key";

pub struct LocalBind {
    child: Child,
    dir: PathBuf,
    pub port: u16,
    /// Base64 TSIG secret (hmac-sha256).
    pub secret: String,
    pub zones: Vec<String>,
}

impl std::fmt::Debug for LocalBind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalBind").field("port", &self.port).field("zones", &self.zones).finish_non_exhaustive()
    }
}

/// Where `named` is, if installed.
pub fn find_named() -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join("named")).collect())
        .unwrap_or_default();
    candidates.extend(["/usr/sbin/named", "/usr/local/sbin/named", "/sbin/named"].map(PathBuf::from));
    candidates.into_iter().find(|p| p.is_file())
}

/// A loopback port free for both TCP and UDP (named listens on both).
fn free_port() -> std::io::Result<u16> {
    loop {
        let l = TcpListener::bind("127.0.0.1:0")?;
        let port = l.local_addr()?.port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
}

impl LocalBind {
    /// Starts `named` with `zones`; `extra(zone)` returns more zone-file lines (test data).
    /// Blocking (spawns and polls a process): call it from `spawn_blocking` on a runtime.
    pub fn start(named: &Path, zones: &[&str], extra: impl Fn(&str) -> String) -> Result<Self, String> {
        let dir = std::env::temp_dir().join(format!("autopilot-bind-{}-{:08x}", std::process::id(), fastrand::u32(..)));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let d = dir.display().to_string();
        let port = free_port().map_err(|e| format!("no free port: {e}"))?;
        let key: Vec<u8> = (0..32).map(|_| fastrand::u8(..)).collect();
        let secret = base64::engine::general_purpose::STANDARD.encode(key);
        let mut conf = format!(
            "key \"{KEY_NAME}\" {{ algorithm hmac-sha256; secret \"{secret}\"; }};\n\
             options {{\n  directory \"{d}\";\n  listen-on port {port} {{ 127.0.0.1; }};\n  listen-on-v6 {{ none; }};\n\
               pid-file none;\n  recursion no;\n  dnssec-validation no;\n  notify no;\n  allow-query {{ any; }};\n\
               session-keyfile \"{d}/session.key\";\n  managed-keys-directory \"{d}\";\n}};\n\
             controls {{ }};\n"
        );
        let write_err = |e: std::io::Error| format!("writing BIND files in {d}: {e}");
        for (i, zone) in zones.iter().enumerate() {
            let file = format!("{d}/zone{i}.db");
            let mut f = std::fs::File::create(&file).map_err(write_err)?;
            write!(
                f,
                "$TTL 300\n@ IN SOA ns.{zone}. hostmaster.{zone}. 1 3600 600 86400 300\n@ IN NS ns.{zone}.\nns IN A 127.0.0.1\n{}",
                extra(zone)
            )
            .map_err(write_err)?;
            conf.push_str(&format!(
                "zone \"{zone}\" {{ type primary; file \"{file}\"; allow-update {{ key \"{KEY_NAME}\"; }}; \
                 allow-transfer {{ key \"{KEY_NAME}\"; }}; }};\n"
            ));
        }
        let conf_path = dir.join("named.conf");
        std::fs::write(&conf_path, conf).map_err(write_err)?;
        let log = std::fs::File::create(dir.join("named.log")).map_err(write_err)?;
        // As root, named keeps root unless told `-u`; as another user it runs as that
        // user, which is enough for a high port and files in our own directory.
        let child = Command::new(named)
            .arg("-g")
            .arg("-c")
            .arg(&conf_path)
            .arg("-n")
            .arg("1")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", named.display()))?;
        let mut bind = Self { child, dir, port, secret, zones: zones.iter().map(|z| (*z).to_owned()).collect() };
        bind.wait_ready()?;
        Ok(bind)
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("named exited early ({status}):\n{}", self.log()));
            }
            // Ready when the log says every zone loaded and the server is running.
            let log = self.log();
            if log.contains("running") && self.zones.iter().all(|z| log.contains(&format!("zone {z}/IN: loaded"))) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("named did not start within 20 s:\n{log}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("named.log")).unwrap_or_default()
    }
}

impl Drop for LocalBind {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
