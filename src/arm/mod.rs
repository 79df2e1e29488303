//! Azure Resource Manager: the source of truth.
//!
//! `client` is the transport (tokens, retries honouring Retry-After, client-side token
//! buckets that stay inside ARM's throttling budget); `request` names one call, `error`
//! says what a failed one means, `lro` follows long-running operations to the end;
//! `endpoints` reads a private endpoint and its NIC into [`crate::model::PrivateEndpoint`];
//! `graph` lists the private endpoints of many subscriptions at once with Resource Graph
//! (the sweep's candidates, to be re-read through `endpoints`).
//! `providers` picks the api-version a resource type is served at (provider registration,
//! spec-derived fallback).

pub mod budget;
pub mod client;
pub mod credential;
pub mod endpoints;
pub mod error;
pub mod graph;
pub mod lease;
pub mod lro;
pub mod permissions;
pub mod providers;
pub mod request;
pub mod table;

pub use client::{ArmClient, ArmConfig, ArmError, ArmRequest, ArmResponse};
pub use credential::{Secret, TokenSource};
