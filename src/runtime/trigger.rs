//! Settling a work item the Functions host delivered (`serviceBusTrigger`), where the
//! host, not we, completes or abandons the message.
//!
//! The host settles the message itself (`host.json` `extensions.serviceBus`:
//! `autoCompleteMessages` is `true`, as it must be for a non-.NET worker, and
//! `maxAutoLockRenewalDuration` covers `functionTimeout`): it *completes* it when we
//! answer 2xx and *abandons* it otherwise, which makes it redeliverable at once with no delay, up to the
//! queue's `MaxDeliveryCount` (then the broker dead-letters it). Abandon is therefore
//! useless as a retry mechanism, so every outcome that is *ours* ends in a 2xx:
//! - done → 2xx (completed);
//! - transient failure → send a delayed copy (next attempt, backoff from the envelope's
//!   attempt, Retry-After honoured) → 2xx;
//! - permanent failure, unreadable message, retry window exhausted → park a copy with
//!   its reason on the dead-letter destination → 2xx.
//!
//! When a follow-up *send* fails (a retry or follow-up work could not be queued) we answer
//! 500: the host abandons, the message comes straight back, nothing is lost (and after
//! ten such failures the broker's own dead-letter queue holds it).
//!
//! A failed *park* is different and answers **2xx**: the work already ran and failed for
//! good, so a redelivery would only repeat its side effects (vendor and ARM writes) up to
//! `MaxDeliveryCount` times in a row, at once, and end in the broker's DLQ with the
//! reason lost. The work item is dropped instead, after an error log naming the message,
//! the endpoint's body and both reasons (stderr and the host's `Logs`), and the
//! settlement says so. At most one execution of the side effects per delivery; the sweep
//! re-plans the endpoint anyway.
//!
//! Decoding the host's invocation is intake's (`intake/queue_trigger.rs`); this file gets
//! a [`Delivery`] and says what the host should be told.

use std::future::Future;

use super::error_policy::{Decision, RetryPolicy, decide};
use super::worker::{Executed, Settlement};
use crate::model::ResourceId;
use crate::queue::work;
use crate::queue::{Delivery, TriggerQueue};

/// What the host must be told about one delivery: `redeliver` = answer non-2xx, so the
/// host abandons the message and it comes straight back.
#[derive(Debug, Clone, PartialEq)]
pub struct Settled {
    pub settlement: Settlement,
    pub redeliver: bool,
}

impl Settled {
    fn done(settlement: Settlement) -> Self {
        Self { settlement, redeliver: false }
    }
}

/// Runs `handle` on a readable delivery, then schedules / parks as the module docs say.
/// `unreadable` = the body could not be decoded: the delivery is parked with that reason
/// and `handle` is not called.
pub async fn settle_delivery<F, Fut, R>(
    delivery: Delivery,
    unreadable: Option<String>,
    queue: &dyn TriggerQueue,
    policy: &RetryPolicy,
    handle: F,
) -> Settled
where
    F: FnOnce(Delivery, ResourceId) -> Fut,
    Fut: Future<Output = R>,
    R: Into<Executed>,
{
    if let Some(reason) = unreadable {
        return park(queue, &delivery, format!("unreadable message: {reason}")).await;
    }
    let (work, id) = match work::parse(&delivery.body) {
        Ok(w) => w,
        Err(e) => return park(queue, &delivery, format!("unreadable message: {e}")).await,
    };
    let executed: Executed = handle(delivery.clone(), id.clone()).await.into();
    for msg in executed.follow_ups {
        if let Err(e) = queue.schedule(msg).await {
            tracing::error!(endpoint = %id, error = %e, "could not queue follow-up work; letting the host redeliver");
            return Settled {
                settlement: Settlement::Abandoned { reason: format!("could not queue follow-up work: {e}") },
                redeliver: true,
            };
        }
    }
    match decide(&work, &id, executed.outcome, policy) {
        Decision::Complete => Settled::done(Settlement::Completed),
        Decision::DeadLetter(reason) => park(queue, &delivery, reason).await,
        Decision::Retry { msg, attempt, after } => match queue.schedule(msg).await {
            Ok(()) => Settled::done(Settlement::Rescheduled { attempt, after }),
            Err(e) => {
                tracing::error!(endpoint = %id, error = %e, "could not schedule retry; letting the host redeliver");
                Settled {
                    settlement: Settlement::Abandoned { reason: format!("could not schedule retry: {e}") },
                    redeliver: true,
                }
            }
        },
    }
}

async fn park(queue: &dyn TriggerQueue, delivery: &Delivery, reason: String) -> Settled {
    tracing::error!(message_id = %delivery.message_id, %reason, "dead-lettering work item");
    match queue.park(delivery, &reason).await {
        Ok(()) => Settled::done(Settlement::DeadLettered { reason }),
        Err(e) => {
            // Module docs: never 500 into a redelivery that repeats the side effects.
            let body = delivery.body.to_string();
            tracing::error!(
                message_id = %delivery.message_id,
                correlation_id = %delivery.correlation_id,
                %reason,
                error = %e,
                body = %body.chars().take(2000).collect::<String>(),
                "DEAD LETTER LOST: could not store the dead letter; completing the message anyway so its side effects do not run again"
            );
            eprintln!(
                "autopilot: DEAD LETTER LOST: message {} ({}): {reason}; storing it failed: {e}",
                delivery.message_id, delivery.correlation_id
            );
            Settled::done(Settlement::DeadLettered { reason: format!("NOT STORED ({e}): {reason}") })
        }
    }
}
