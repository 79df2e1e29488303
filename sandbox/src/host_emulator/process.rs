//! Starting a handler process the way the Functions host does: a free port in
//! `FUNCTIONS_CUSTOMHANDLER_PORT` (and the legacy names), readiness polled on `GET /`,
//! stdout and stderr captured line by line (bounded), the child killed when dropped.
//!
//! Separate from invocation: tests that drive an in-process handler never spawn one.

use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

use super::{HostEmulator, new_guid};

/// The host's readiness poll interval (`DefaultHttpWorkerService.IsWorkerReady`).
pub const READINESS_POLL_INTERVAL: Duration = Duration::from_millis(25);
/// The host's `InitializationTimeout`.
pub const READINESS_BUDGET: Duration = Duration::from_secs(30);
/// Captured output lines kept per stream; older lines are dropped first.
const MAX_CAPTURED_LINES: usize = 10_000;
/// Longest captured line kept (the rest is cut) so a runaway child cannot fill memory.
const MAX_CAPTURED_LINE_LEN: usize = 8 * 1024;

/// A handler process started like the host starts it. Killed when dropped.
#[derive(Debug)]
pub struct SpawnedHandler {
    /// `http://127.0.0.1:{port}`.
    pub base_url: String,
    /// Time from spawn to the first HTTP answer on `GET /`.
    pub ready_after: Duration,
    pub child: tokio::process::Child,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl SpawnedHandler {
    /// A host emulator pointed at this handler.
    pub fn host(&self) -> HostEmulator {
        HostEmulator::new(&self.base_url)
    }
    /// Lines the handler wrote to stderr so far (the host logs each at Error level).
    pub fn stderr_lines(&self) -> Vec<String> {
        snapshot(&self.stderr)
    }
    /// Lines the handler wrote to stdout so far (the host logs each at Information level).
    pub fn stdout_lines(&self) -> Vec<String> {
        snapshot(&self.stdout)
    }
    /// Kills the process and waits for it to exit.
    pub async fn kill(&mut self) -> std::io::Result<()> {
        self.child.kill().await
    }
}

impl Drop for SpawnedHandler {
    fn drop(&mut self) {
        // `kill_on_drop` covers this too; asking explicitly makes the intent obvious.
        let _ = self.child.start_kill();
    }
}

fn snapshot(lines: &Mutex<Vec<String>>) -> Vec<String> {
    lines.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
}

/// Starts a handler the way the host does and waits until it answers `GET /`.
pub async fn spawn_handler(
    program: &Path,
    args: &[&str],
    app_root: &Path,
    extra_env: &[(String, String)],
) -> Result<SpawnedHandler, String> {
    spawn_handler_with_budget(program, args, app_root, extra_env, READINESS_BUDGET).await
}

/// [`spawn_handler`] with a readiness budget other than the host's 30 s.
pub async fn spawn_handler_with_budget(
    program: &Path,
    args: &[&str],
    app_root: &Path,
    extra_env: &[(String, String)],
    budget: Duration,
) -> Result<SpawnedHandler, String> {
    // Like `WorkerUtilities.GetUnusedTcpPort()`: bind port 0, note the port, release it.
    let port = {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(|e| format!("cannot find a free port: {e}"))?;
        listener.local_addr().map_err(|e| format!("cannot read the free port: {e}"))?.port()
    };
    // Like the host: a relative executable that exists under the app root runs from there;
    // anything else is left to PATH.
    let under_root = app_root.join(program);
    let program = if program.is_relative() && tokio::fs::metadata(&under_root).await.is_ok_and(|m| m.is_file()) {
        under_root
    } else {
        program.to_path_buf()
    };
    let worker_id = new_guid();
    let mut command = tokio::process::Command::new(&program);
    command
        .args(args)
        .current_dir(app_root)
        .env("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string())
        .env("FUNCTIONS_HTTPWORKER_PORT", port.to_string())
        .env("FUNCTIONS_CUSTOMHANDLER_WORKER_ID", &worker_id)
        .env("FUNCTIONS_HTTPWORKER_ID", &worker_id)
        .env("FUNCTIONS_APP_ROOT_PATH", app_root)
        .envs(extra_env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let started = Instant::now();
    let mut child = command.spawn().map_err(|e| format!("cannot start {}: {e}", program.display()))?;
    let stdout = Arc::new(Mutex::new(Vec::new()));
    let stderr = Arc::new(Mutex::new(Vec::new()));
    if let Some(out) = child.stdout.take() {
        capture_lines(out, Arc::clone(&stdout));
    }
    if let Some(err) = child.stderr.take() {
        capture_lines(err, Arc::clone(&stderr));
    }
    let base_url = format!("http://127.0.0.1:{port}");
    let mut handler = SpawnedHandler { base_url, ready_after: Duration::ZERO, child, stdout, stderr };

    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(1))
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
    loop {
        // Any HTTP status means the server is up; only a transport error means "not yet".
        if client.get(format!("{}/", handler.base_url)).send().await.is_ok() {
            handler.ready_after = started.elapsed();
            return Ok(handler);
        }
        if let Ok(Some(status)) = handler.child.try_wait() {
            // Give the reader tasks a moment to collect the last lines.
            tokio::time::sleep(Duration::from_millis(50)).await;
            return Err(format!(
                "handler exited with {status} before answering GET /; last stderr: {}",
                tail(&handler.stderr_lines())
            ));
        }
        if started.elapsed() >= budget {
            let _ = handler.child.kill().await;
            return Err(format!(
                "handler did not answer GET {}/ within {budget:?}; last stderr: {}",
                handler.base_url,
                tail(&handler.stderr_lines())
            ));
        }
        tokio::time::sleep(READINESS_POLL_INTERVAL).await;
    }
}

fn tail(lines: &[String]) -> String {
    let start = lines.len().saturating_sub(5);
    if lines.is_empty() { "<none>".into() } else { lines[start..].join(" | ") }
}

fn capture_lines(stream: impl AsyncRead + Unpin + Send + 'static, sink: Arc<Mutex<Vec<String>>>) {
    tokio::spawn(async move {
        let mut reader = BufReader::new(stream);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let end = buf.len().min(MAX_CAPTURED_LINE_LEN);
                    let line = String::from_utf8_lossy(&buf[..end]).trim_end_matches(['\r', '\n']).to_string();
                    let mut lines = sink.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    if lines.len() >= MAX_CAPTURED_LINES {
                        lines.remove(0);
                    }
                    lines.push(line);
                }
            }
        }
    });
}
