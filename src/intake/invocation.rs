//! One host invocation, as both `server.rs` and `catch_up.rs` answer it: the function
//! names (the folders in `handlers/`), parsing the host's request body, and the two
//! answers (ok with the host's `{Outputs, Logs, ReturnValue}`, or a failure whose
//! reason also goes to stderr because the host shows only the status).

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::protocol::{InvocationRequest, InvocationResponse};
use crate::telemetry::Stats;

/// Function names = folder names in `handlers/`. A test keeps the two in sync.
pub const FUNCTIONS: &[&str] = &[EVENTS_FUNCTION, STATUS_FUNCTION, WORK_FUNCTION, SWEEP_FUNCTION, CATCH_UP_FUNCTION];
pub const EVENTS_FUNCTION: &str = "PrivateEndpointEvents";
pub const STATUS_FUNCTION: &str = "Status";
/// `serviceBusTrigger` on the work queue (Azure; locally the embedded workers drain it).
pub const WORK_FUNCTION: &str = "WorkQueue";
/// `timerTrigger`: the periodic sweep.
pub const SWEEP_FUNCTION: &str = "Sweep";

/// `timerTrigger`: target-side approvals and the `resourcechanges` catch-up (`catch_up.rs`).
pub const CATCH_UP_FUNCTION: &str = "CatchUp";

pub(crate) fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

pub(crate) fn invocation_ok(resp: InvocationResponse) -> Response {
    json_response(StatusCode::OK, resp.to_json_bytes())
}

/// A failed invocation: the host only sees the status, so the reason goes to stderr.
pub(crate) fn invocation_failed(status: StatusCode, function: &str, reason: &str) -> Response {
    eprintln!("autopilot: {function} invocation failed: {reason}");
    tracing::error!(function, %reason, "invocation failed");
    json_response(status, serde_json::to_vec(&json!({"error": reason})).unwrap_or_default())
}

/// Parses the host's invocation body; a malformed one is counted and answered 400.
pub(crate) fn parse_invocation(stats: &Stats, body: &[u8], function: &str) -> Result<InvocationRequest, Box<Response>> {
    InvocationRequest::parse(body).map_err(|e| {
        Stats::inc(&stats.invocations_rejected);
        Box::new(invocation_failed(StatusCode::BAD_REQUEST, function, &format!("malformed invocation: {e}")))
    })
}
