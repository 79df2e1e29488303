//! Target catalog (lead writes this).
