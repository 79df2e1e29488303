//! Zone -> provider routing (lead writes this).
#[derive(Debug, Clone, Default)]
pub struct DnsRouter;
