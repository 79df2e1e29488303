//! One way to run a fake: an axum router on `127.0.0.1:0`, stopped when the handle is
//! dropped (so a test that panics never leaves a server behind).

use std::net::SocketAddr;

use axum::Router;
use tokio::task::JoinHandle;

#[derive(Debug)]
pub struct LoopbackServer {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl LoopbackServer {
    pub async fn start(router: Router) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        Self::serve(listener, router)
    }

    /// Serves on a listener the caller bound (when the address must be known first).
    pub fn serve(listener: tokio::net::TcpListener, router: Router) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router).await {
                tracing::warn!(error = %e, %addr, "sandbox server stopped");
            }
        });
        Ok(Self { addr, task })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for LoopbackServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
