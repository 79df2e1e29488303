//! RFC 2136 provider. STUB: the RFC 2136 helper replaces this file.
