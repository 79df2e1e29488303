//! Azure Resource Manager: the source of truth.
//!
//! `client` is the transport (tokens, retries honouring Retry-After, client-side token
//! buckets that stay inside ARM's throttling budget, long-running operations);
//! `endpoints` reads a private endpoint and its NIC into [`crate::model::PrivateEndpoint`].

pub mod budget;
pub mod client;
pub mod credential;
pub mod endpoints;

pub use client::{ArmClient, ArmConfig, ArmError, ArmRequest, ArmResponse};
pub use credential::{Secret, TokenSource};
