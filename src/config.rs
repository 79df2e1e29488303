//! Configuration (lead writes this).
