//! Effects: everything that changes the world outside ARM reads. One folder per kind of
//! effect; each backend behind a small trait.

pub mod approvals;
pub mod audit;
pub mod audit_spool;
pub mod dns;
pub mod marks;
pub mod small_state;
pub mod target_approvals;
pub mod vendors;
