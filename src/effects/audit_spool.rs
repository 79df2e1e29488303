//! Publishing audit events without ever making a reconcile wait for the audit topic.
//!
//! An Event Grid topic answers in tens of milliseconds on a good day and with `429
//! Retry-After` on a bad one. Awaiting it inside a reconcile would put its latency on the
//! way from event to record and, when throttled, hold the endpoint's lock and the
//! invocation past the host's timeout. So the remote sink sits behind a bounded spool: a
//! reconcile hands its events over and returns at once; one background task publishes
//! them in order. When the spool is full (the topic has been failing for a while) new
//! events are dropped and counted (`audit_dropped` in the health counters, one warning per
//! drop spell): the actions they describe already happened, and the logs still carry
//! them. A local JSON-lines file is fast and is written directly.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::mpsc;

use super::audit::{AuditEvent, AuditSink};
use crate::telemetry::Stats;

/// Events waiting at most (about a minute of a busy estate's events).
pub const SPOOL_CAPACITY: usize = 10_000;
/// Events published in one request at most (Event Grid accepts batches up to 1 MB).
const BATCH: usize = 100;

#[derive(Debug)]
pub struct SpooledSink {
    tx: mpsc::Sender<AuditEvent>,
    stats: Arc<Stats>,
    dropping: AtomicBool,
}

impl SpooledSink {
    /// Starts the background publisher (on the current Tokio runtime).
    pub fn start(inner: Arc<dyn AuditSink>, stats: Arc<Stats>) -> Self {
        let (tx, mut rx) = mpsc::channel::<AuditEvent>(SPOOL_CAPACITY);
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(BATCH);
            while rx.recv_many(&mut batch, BATCH).await > 0 {
                if let Err(e) = inner.publish(&batch).await {
                    tracing::error!(error = %e, lost = batch.len(), "audit events not published");
                }
                batch.clear();
            }
        });
        Self { tx, stats, dropping: AtomicBool::new(false) }
    }
}

#[async_trait::async_trait]
impl AuditSink for SpooledSink {
    async fn publish(&self, events: &[AuditEvent]) -> Result<(), String> {
        for event in events {
            match self.tx.try_send(event.clone()) {
                Ok(()) => {
                    self.dropping.store(false, Ordering::Relaxed);
                }
                Err(_) => {
                    Stats::inc(&self.stats.audit_dropped);
                    if !self.dropping.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            capacity = SPOOL_CAPACITY,
                            "audit spool full (the topic keeps failing): dropping audit events, counted in audit_dropped"
                        );
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[derive(Debug)]
    struct Stuck;

    #[async_trait::async_trait]
    impl AuditSink for Stuck {
        async fn publish(&self, _: &[AuditEvent]) -> Result<(), String> {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_stuck_topic_never_blocks_and_overflow_is_counted() {
        let stats = Arc::new(Stats::default());
        let sink = SpooledSink::start(Arc::new(Stuck), stats.clone());
        let event = AuditEvent {
            kind: crate::effects::audit::EventType::DnsRecordWritten.into(),
            subject: "x".into(),
            data: serde_json::json!({}),
        };
        let many = vec![event; SPOOL_CAPACITY + BATCH + 50];
        let started = std::time::Instant::now();
        sink.publish(&many).await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(1), "publishing never waits for the topic");
        let dropped = stats.audit_dropped.load(Ordering::Relaxed);
        assert!((1..=BATCH as u64 + 50).contains(&dropped), "dropped {dropped}");
    }
}
