//! Long-running operations: following `Azure-AsyncOperation` or `Location` to the end.
//!
//! A 201/202 from ARM is a promise, not a result. This file turns it into one: it polls
//! the URL the server gave (only on our own origin, see `trusted_url`), honours
//! `Retry-After` with a floor, and gives up after `lro_timeout`. Every poll goes through
//! the same retry loop and budget as any other request.

use serde_json::Value;
use std::time::Duration;
use tokio::time::Instant;
use url::Url;

use super::client::{ArmClient, Prepared};
use super::error::{ArmError, error_from_value, server_retry_after};
use super::request::{ArmRequest, ArmResponse, Method};
use crate::backoff::Backoff;

/// Longest gap between LRO polls when the server gives no `Retry-After`.
const LRO_POLL_MAX: Duration = Duration::from_secs(30);

impl ArmClient {
    /// Sends a request that may start a long-running operation (201/202 with
    /// `Azure-AsyncOperation` or `Location`) and polls it to the end; returns the final
    /// resource (a GET of `req.path` if the operation result has no body).
    ///
    /// * 200/204 (or 201/202 without either header) are returned as they are.
    /// * `Azure-AsyncOperation`: polled until `status` is Succeeded/Failed/Canceled.
    ///   Succeeded: PUT/PATCH return a fresh GET of `req.path`; POST returns the `Location`
    ///   result if there is one; DELETE returns the final status response.
    /// * `Location`: polled until it stops answering 202; its answer is the result (PUT/PATCH
    ///   with an empty result fall back to a GET of `req.path`).
    /// * Failed/Canceled -> [`ArmError::Operation`]; not done within `lro_timeout` ->
    ///   [`ArmError::Operation`] with status `TimedOut`.
    pub async fn send_and_wait(&self, req: ArmRequest) -> Result<ArmResponse, ArmError> {
        let method = req.method;
        let path = req.path.clone();
        let api_version = req.api_version.clone();
        let first = self.send(req).await?;
        if !matches!(first.status, 201 | 202) {
            return Ok(first);
        }
        let deadline = Instant::now() + self.inner.config.lro_timeout;
        let async_op = first.header("azure-asyncoperation").filter(|v| !v.trim().is_empty());
        let location = first.header("location").filter(|v| !v.trim().is_empty());

        if let Some(op) = async_op {
            let op_url = self.trusted_url(method, &path, op, "Azure-AsyncOperation")?;
            // Check the Location too before polling, so a bad header fails fast.
            let loc_url = match location {
                Some(l) if method == Method::Post => Some(self.trusted_url(method, &path, l, "Location")?),
                _ => None,
            };
            let final_status = self.poll_async_operation(op_url, &path, &first.headers, deadline).await?;
            return match method {
                Method::Put | Method::Patch => self.send(ArmRequest::get(path, &api_version)).await,
                Method::Post => match loc_url {
                    Some(u) => self.poll_location(u, &path, &final_status.headers, deadline).await,
                    None => Ok(final_status),
                },
                Method::Get | Method::Delete => Ok(final_status),
            };
        }
        if let Some(loc) = location {
            let loc_url = self.trusted_url(method, &path, loc, "Location")?;
            let last = self.poll_location(loc_url, &path, &first.headers, deadline).await?;
            if matches!(method, Method::Put | Method::Patch) && last.body.is_null() {
                return self.send(ArmRequest::get(path, &api_version)).await;
            }
            return Ok(last);
        }
        Ok(first)
    }

    /// Polls an `Azure-AsyncOperation` URL until its `status` is terminal.
    async fn poll_async_operation(
        &self,
        url: Url,
        path: &str,
        first_headers: &[(String, String)],
        deadline: Instant,
    ) -> Result<ArmResponse, ArmError> {
        self.poll_until(url, path, first_headers, deadline, |resp| {
            let status = resp.body.get("status").and_then(Value::as_str).unwrap_or_default().to_string();
            if status.eq_ignore_ascii_case("succeeded") {
                return Some(Ok(resp));
            }
            if status.eq_ignore_ascii_case("failed") || status.eq_ignore_ascii_case("canceled") {
                let (code, message) = error_from_value(&resp.body);
                let default_code =
                    if status.eq_ignore_ascii_case("failed") { "OperationFailed" } else { "OperationCanceled" };
                return Some(Err(ArmError::Operation {
                    path: path.to_string(),
                    status,
                    code: code.unwrap_or_else(|| default_code.to_string()),
                    message: message.unwrap_or_else(|| "the operation ended without an error message".into()),
                }));
            }
            None
        })
        .await
    }

    /// Polls a `Location` URL until it stops answering 202.
    async fn poll_location(
        &self,
        url: Url,
        path: &str,
        first_headers: &[(String, String)],
        deadline: Instant,
    ) -> Result<ArmResponse, ArmError> {
        self.poll_until(url, path, first_headers, deadline, |resp| (resp.status != 202).then_some(Ok(resp))).await
    }

    /// GETs `url` (honouring Retry-After between polls, within `deadline`) until `done`
    /// returns an answer.
    async fn poll_until(
        &self,
        url: Url,
        path: &str,
        first_headers: &[(String, String)],
        deadline: Instant,
        done: impl Fn(ArmResponse) -> Option<Result<ArmResponse, ArmError>>,
    ) -> Result<ArmResponse, ArmError> {
        let mut delay = self.poll_delay(first_headers, 1);
        let mut poll: u32 = 1;
        loop {
            self.sleep_until_poll(path, delay, deadline).await?;
            let resp = self.poll_get(&url).await?;
            let headers = resp.headers.clone();
            if let Some(result) = done(resp) {
                return result;
            }
            poll = poll.saturating_add(1);
            delay = self.poll_delay(&headers, poll);
        }
    }

    async fn poll_get(&self, url: &Url) -> Result<ArmResponse, ArmError> {
        self.execute(Prepared {
            method: Method::Get,
            path: url.path().to_string(),
            url: url.clone(),
            body: None,
            headers: &[],
        })
        .await
    }

    /// Sleeps `delay`, but never past `deadline`; fails once the deadline has passed.
    async fn sleep_until_poll(&self, path: &str, delay: Duration, deadline: Instant) -> Result<(), ArmError> {
        let now = Instant::now();
        if now >= deadline {
            return Err(ArmError::Operation {
                path: path.to_string(),
                status: "TimedOut".into(),
                code: "OperationTimedOut".into(),
                message: format!("the operation was still running after {:?}", self.inner.config.lro_timeout),
            });
        }
        tokio::time::sleep(delay.min(deadline - now)).await;
        Ok(())
    }

    /// `Retry-After` floored by `lro_poll_min`; without one, our own gentle backoff.
    fn poll_delay(&self, headers: &[(String, String)], poll: u32) -> Duration {
        let min = self.inner.config.lro_poll_min;
        match server_retry_after(headers) {
            Some(ra) => ra.max(min),
            None => Backoff::new(min, LRO_POLL_MAX.max(min)).delay(poll).max(min),
        }
    }
}
