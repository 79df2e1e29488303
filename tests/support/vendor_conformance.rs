//! Conformance suite for [`Vendor`] clients.
//!
//! The reconciler and the vendor queue worker are written against the trait's documented
//! promises, not against one vendor: register is idempotent and never duplicates, "already
//! there" and "already gone" are success, a transient failure says so and carries the
//! server's Retry-After, a rejected key is a configuration error that never prints the key,
//! and `is_registered` tells the truth. Every client must keep them against its fake, so
//! the checks are written once here and run for ClickHouse, Elastic and Zilliz by
//! `tests/vendor_conformance.rs`. Vendor-specific behaviour (ClickHouse's organization
//! entry, Elastic's associations, Zilliz's HTTP-200 failures) stays in `tests/vendors.rs`.
//!
//! The suite reaches the fakes only through their shared [`Gate`] (faults, request log,
//! write hold) and counts registrations through the [`Subject`]'s `registrations`, so it
//! knows nothing of any vendor's state. Each check takes a fresh subject and panics with
//! a message naming the vendor and the violated rule.
#![allow(dead_code)] // The including crate may run a subset.

use std::sync::Arc;
use std::time::Duration;

use autopilot_sandbox::fake_vendors::{Fault, Gate, count_writes};
use private_link_autopilot::effects::vendors::{Change, Vendor, VendorEndpoint, VendorErrorKind};

/// Upper bound for "the parked write arrives"; reached only when something is broken.
const PATIENCE: Duration = Duration::from_secs(10);

/// One client under test, with its fake.
pub struct Subject {
    /// The client under test.
    pub client: Arc<dyn Vendor>,
    /// A second client with the same configuration (another instance of the app).
    pub rival: Arc<dyn Vendor>,
    /// A client whose key the fake rejects.
    pub wrong_key: Arc<dyn Vendor>,
    /// The secret values in play (right and wrong); none may appear in any error text.
    pub secrets: Vec<String>,
    /// The fake's faults, request log and write hold.
    pub gate: Arc<Gate>,
    /// How many registrations of `ep` the fake holds (0 or 1 when the client is right).
    pub registrations: Box<dyn Fn(&VendorEndpoint) -> usize + Send + Sync>,
    /// An endpoint the client accepts (it has a resourceGuid).
    pub endpoint: VendorEndpoint,
    /// Keeps the fake running for the subject's lifetime.
    pub _fake: Box<dyn std::any::Any + Send + Sync>,
}

impl Subject {
    fn name(&self) -> &'static str {
        self.client.name()
    }

    /// The endpoint with another name and guid (another registration entirely).
    pub fn other_endpoint(&self, n: usize) -> VendorEndpoint {
        VendorEndpoint {
            pe_id: format!("{}-{n}", self.endpoint.pe_id),
            pe_name: format!("{}-{n}", self.endpoint.pe_name),
            resource_guid: Some(format!("00000000-0000-4000-8000-{n:012}")),
            ..self.endpoint.clone()
        }
    }

    fn assert_no_secret(&self, text: &str) {
        for secret in &self.secrets {
            assert!(!text.contains(secret.as_str()), "{}: a secret leaked into {text:?}", self.name());
        }
    }
}

/// Runs every check, each on a subject fresh from `make`.
pub async fn run_all<F, Fut>(make: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Subject>,
{
    register_is_idempotent(make().await).await;
    register_twice_leaves_one_registration(make().await).await;
    duplicate_answer_after_a_lost_race_is_success(make().await).await;
    racing_clients_leave_one_registration(make().await).await;
    deregister_of_absent_is_success(make().await).await;
    throttled_or_unavailable_is_transient_with_retry_after(make().await).await;
    server_error_and_timeout_are_transient(make().await).await;
    rejected_key_is_a_config_error_without_the_key(make().await).await;
    is_registered_agrees_with_the_vendor(make().await).await;
}

/// A second register writes nothing and says so.
pub async fn register_is_idempotent(s: Subject) {
    let ep = &s.endpoint;
    assert_eq!(s.client.register(ep).await.unwrap(), Change::Applied, "{}: first register writes", s.name());
    s.gate.clear_requests();
    assert_eq!(
        s.client.register(ep).await.unwrap(),
        Change::AlreadyInPlace,
        "{}: second register is already in place",
        s.name()
    );
    assert_eq!(count_writes(&s.gate.requests()), 0, "{}: no write on repeat: {:?}", s.name(), s.gate.requests());
}

/// However often register runs (the queue delivers at least once), the vendor holds one
/// registration.
pub async fn register_twice_leaves_one_registration(s: Subject) {
    let ep = &s.endpoint;
    for _ in 0..3 {
        s.client.register(ep).await.unwrap();
    }
    assert_eq!((s.registrations)(ep), 1, "{}: one registration after three registers", s.name());
}

/// The rival registers between our read and our write, so our write meets the vendor's
/// "already added" (or makes a duplicate the client must clean up): still success, and
/// still one registration.
pub async fn duplicate_answer_after_a_lost_race_is_success(s: Subject) {
    let ep = s.endpoint.clone();
    let mut hold = s.gate.hold_next_write();
    let client = s.client.clone();
    let ours = tokio::spawn({
        let ep = ep.clone();
        async move { client.register(&ep).await }
    });
    assert!(hold.reached(PATIENCE).await, "{}: register never wrote", s.name());
    assert_eq!(s.rival.register(&ep).await.unwrap(), Change::Applied, "{}: the rival registers first", s.name());
    hold.release();
    let result = ours.await.unwrap_or_else(|e| panic!("register task: {e}"));
    assert!(result.is_ok(), "{}: a lost race is success, got {result:?}", s.name());
    let writes = count_writes(&s.gate.requests());
    assert!(writes >= 2, "{}: both clients wrote (the race happened): {:?}", s.name(), s.gate.requests());
    assert_eq!((s.registrations)(&ep), 1, "{}: one registration after the race", s.name());
    assert!(s.client.is_registered(&ep).await.unwrap(), "{}: registered after the race", s.name());
}

/// Two instances registering the same endpoint at once leave one registration.
pub async fn racing_clients_leave_one_registration(s: Subject) {
    for n in 0..3 {
        let ep = s.other_endpoint(n);
        let (a, b) = tokio::join!(s.client.register(&ep), s.rival.register(&ep));
        assert!(a.is_ok() && b.is_ok(), "{}: both racers succeed: {a:?} {b:?}", s.name());
        // A client that cleans up duplicates on its next pass (Elastic) converges here.
        s.client.register(&ep).await.unwrap();
        assert_eq!((s.registrations)(&ep), 1, "{}: one registration after race {n}", s.name());
    }
}

/// Removing what is not there is success without a write, before and after a register.
pub async fn deregister_of_absent_is_success(s: Subject) {
    let ep = &s.endpoint;
    assert_eq!(
        s.client.deregister(ep).await.unwrap(),
        Change::AlreadyInPlace,
        "{}: never registered = already gone",
        s.name()
    );
    assert_eq!(count_writes(&s.gate.requests()), 0, "{}: no write for an absent endpoint", s.name());
    s.client.register(ep).await.unwrap();
    assert_eq!(s.client.deregister(ep).await.unwrap(), Change::Applied, "{}: deregister removes", s.name());
    s.gate.clear_requests();
    assert_eq!(s.client.deregister(ep).await.unwrap(), Change::AlreadyInPlace, "{}: second deregister", s.name());
    assert_eq!(count_writes(&s.gate.requests()), 0, "{}: no write when already gone", s.name());
    assert_eq!((s.registrations)(ep), 0, "{}: nothing left", s.name());
}

/// 429 and 503 are transient, and the server's Retry-After travels with the error as
/// the queue's floor; once the vendor is back, register works.
pub async fn throttled_or_unavailable_is_transient_with_retry_after(s: Subject) {
    let ep = &s.endpoint;
    for (fault, secs) in [
        (Fault::TooManyRequests { retry_after: Some(Duration::from_secs(3)) }, 3),
        (Fault::ServiceUnavailable { retry_after: Some(Duration::from_secs(7)) }, 7),
    ] {
        s.gate.inject(fault.clone(), 1);
        let err = s.client.register(ep).await.unwrap_err();
        assert_eq!(err.kind, VendorErrorKind::Transient, "{}: {fault:?} is transient: {err}", s.name());
        assert_eq!(err.retry_after, Some(Duration::from_secs(secs)), "{}: {fault:?} keeps Retry-After", s.name());
    }
    assert_eq!(s.client.register(ep).await.unwrap(), Change::Applied, "{}: works once the vendor is back", s.name());
}

/// A 500 and a reply slower than the client's timeout are transient too.
pub async fn server_error_and_timeout_are_transient(s: Subject) {
    let ep = &s.endpoint;
    s.gate.inject(Fault::ServerError, 1);
    let err = s.client.register(ep).await.unwrap_err();
    assert_eq!(err.kind, VendorErrorKind::Transient, "{}: 500 is transient: {err}", s.name());
    assert!(err.message.contains("500"), "{}: the status is named: {err}", s.name());
    // The subject's clients time out after a second; the fake answers after five.
    s.gate.inject(Fault::Timeout(Duration::from_secs(5)), 1);
    let err = s.client.register(ep).await.unwrap_err();
    assert_eq!(err.kind, VendorErrorKind::Transient, "{}: a timeout is transient: {err}", s.name());
    assert!(err.message.contains("timed out"), "{}: says it timed out: {err}", s.name());
    s.gate.clear_faults();
}

/// 401 (wrong key) and 403 (key without the role) are configuration errors: retrying
/// cannot help, the operator must fix the key. No text about them shows the key.
pub async fn rejected_key_is_a_config_error_without_the_key(s: Subject) {
    let ep = &s.endpoint;
    let err = s.wrong_key.register(ep).await.unwrap_err();
    assert_eq!(err.kind, VendorErrorKind::Config, "{}: 401 is a configuration error: {err}", s.name());
    assert_eq!(err.status, Some(401), "{}: {err}", s.name());
    assert!(err.message.contains("401"), "{}: the message names the refusal: {err}", s.name());
    for text in [err.to_string(), format!("{err:?}"), format!("{:?}", s.wrong_key), format!("{:?}", s.client)] {
        s.assert_no_secret(&text);
    }
    s.gate.inject(Fault::Status(403), 1);
    let err = s.client.register(ep).await.unwrap_err();
    assert_eq!(err.kind, VendorErrorKind::Config, "{}: 403 is a configuration error: {err}", s.name());
    assert!(err.message.contains("403"), "{}: the message names the refusal: {err}", s.name());
    s.assert_no_secret(&err.to_string());
    assert_eq!((s.registrations)(ep), 0, "{}: a refused key changed nothing", s.name());
}

/// `is_registered` is false before, true after register, false after deregister, and
/// agrees with what the vendor holds. (Another instance may answer from a listing a few
/// seconds old, as Zilliz's client does by design, so only its first answer is checked.)
pub async fn is_registered_agrees_with_the_vendor(s: Subject) {
    let ep = &s.endpoint;
    assert!(!s.client.is_registered(ep).await.unwrap(), "{}: not registered at first", s.name());
    s.client.register(ep).await.unwrap();
    assert!(s.client.is_registered(ep).await.unwrap(), "{}: registered after register", s.name());
    assert!(s.rival.is_registered(ep).await.unwrap(), "{}: another instance agrees", s.name());
    assert_eq!((s.registrations)(ep), 1, "{}: the vendor agrees", s.name());
    s.client.deregister(ep).await.unwrap();
    assert!(!s.client.is_registered(ep).await.unwrap(), "{}: not registered after deregister", s.name());
    assert_eq!((s.registrations)(ep), 0, "{}: the vendor agrees", s.name());
}
