//! Reconcile (lead writes this).
