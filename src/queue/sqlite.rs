//! Embedded durable queue. STUB: the queue helper replaces this file.
#[derive(Debug)]
pub struct SqliteQueue;
