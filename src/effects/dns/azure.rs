//! Azure Private DNS provider (lead writes this).
