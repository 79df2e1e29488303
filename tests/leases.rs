//! Endpoint leases (one writer per endpoint across instances): one behaviour suite run
//! against the in-memory store, the fake Table service and Azurite, plus the exclusive
//! runner on top of the Table store with two "instances" sharing it.

#[path = "support/azurite.rs"]
mod azurite;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use autopilot_sandbox::fake_table::FakeTableService;
use private_link_autopilot::arm::Secret;
use private_link_autopilot::arm::credential::StaticToken;
use private_link_autopilot::arm::lease::{Acquired, LeaseError, LeaseStore, MemoryLeases, TableLeases};
use private_link_autopilot::reconcile::exclusive::{Exclusive, Refused};
use private_link_autopilot::telemetry::Stats;

const TOKEN: &str = "storage-token-lease";
const KEY: &str = "/subscriptions/s/resourcegroups/rg/providers/microsoft.network/privateendpoints/pe-1";

async fn behaves(store: &dyn LeaseStore) {
    let ttl = Duration::from_secs(2);
    let Acquired::Held(a) = store.acquire(KEY, "a", ttl).await.unwrap() else { panic!("free lease not granted") };
    match store.acquire(KEY, "b", ttl).await.unwrap() {
        Acquired::Busy { holder, for_at_most } => {
            assert_eq!(holder, "a");
            assert!(for_at_most <= ttl && for_at_most > Duration::ZERO, "{for_at_most:?}");
        }
        other => panic!("a held lease was granted twice: {other:?}"),
    }
    let a2 = store.renew(&a, ttl).await.unwrap();
    // The old version is stale after a renewal: a renew or release with it changes nothing.
    assert_eq!(store.renew(&a, ttl).await, Err(LeaseError::Lost));
    store.release(&a).await.unwrap();
    assert!(matches!(store.acquire(KEY, "b", ttl).await.unwrap(), Acquired::Busy { .. }), "stale release freed it");
    store.release(&a2).await.unwrap();
    let Acquired::Held(b) = store.acquire(KEY, "b", ttl).await.unwrap() else { panic!("released lease not granted") };
    // Expiry: after the time to live anyone may take it over, and the old holder has lost it.
    tokio::time::sleep(ttl + Duration::from_millis(300)).await;
    let Acquired::Held(c) = store.acquire(KEY, "c", ttl).await.unwrap() else { panic!("expired lease not taken over") };
    assert_eq!(store.renew(&b, ttl).await, Err(LeaseError::Lost));
    store.release(&c).await.unwrap();
    // Racing takers: exactly one wins.
    let (x, y) = tokio::join!(store.acquire("k2", "x", ttl), store.acquire("k2", "y", ttl));
    let held = [x.unwrap(), y.unwrap()].iter().filter(|a| matches!(a, Acquired::Held(_))).count();
    assert_eq!(held, 1);
}

fn fake_leases(fake: &FakeTableService) -> TableLeases {
    TableLeases::new(&fake.base_url(), "endpointleases", Arc::new(StaticToken(Secret::new(TOKEN)))).unwrap()
}

#[tokio::test]
async fn memory_leases_behave() {
    behaves(&MemoryLeases::default()).await;
}

#[tokio::test]
async fn fake_table_leases_behave() {
    let fake = FakeTableService::start(TOKEN, 1000).await.unwrap();
    behaves(&fake_leases(&fake)).await;
}

#[tokio::test]
async fn azurite_table_leases_behave() {
    let Some(a) = azurite::azurite() else { return };
    behaves(&azurite::azurite_leases(a, azurite::storage_token(3600))).await;
}

#[tokio::test]
async fn a_lease_store_that_refuses_the_identity_is_a_configuration_error() {
    let fake = FakeTableService::start(TOKEN, 1000).await.unwrap();
    let store =
        TableLeases::new(&fake.base_url(), "endpointleases", Arc::new(StaticToken(Secret::new("nope")))).unwrap();
    let exclusive =
        Exclusive::with_leases(Arc::new(store), Duration::from_secs(3), "a".into(), Arc::new(Stats::default()));
    let refused = exclusive.run(KEY, async {}).await.unwrap_err();
    assert!(refused.is_permanent(), "{refused:?}");
    let (_, reason) = refused.requeue();
    assert!(reason.contains("Storage Table Data Contributor"), "{reason}");
}

/// Two instances sharing the Table store: never two writers inside at once; the one
/// refused is told to come back within the lease's time to live.
#[tokio::test]
async fn instances_sharing_the_table_store_take_turns() {
    let fake = FakeTableService::start(TOKEN, 1000).await.unwrap();
    let stats = Arc::new(Stats::default());
    let make = |name: &str| {
        Arc::new(Exclusive::with_leases(
            Arc::new(fake_leases(&fake)),
            Duration::from_secs(6),
            name.into(),
            stats.clone(),
        ))
    };
    let (a, b) = (make("a"), make("b"));
    let inside = Arc::new(AtomicUsize::new(0));
    let ran = Arc::new(AtomicUsize::new(0));
    let mut tasks = vec![];
    for i in 0..16 {
        let x = if i % 2 == 0 { a.clone() } else { b.clone() };
        let (inside, ran) = (inside.clone(), ran.clone());
        tasks.push(tokio::spawn(async move {
            let r = x
                .run(KEY, async {
                    assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0, "two writers at once");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    inside.fetch_sub(1, Ordering::SeqCst);
                })
                .await;
            match r {
                Ok(()) => {
                    ran.fetch_add(1, Ordering::SeqCst);
                }
                Err(Refused::Busy { retry_after, .. }) => assert!(retry_after <= Duration::from_secs(6)),
                Err(other) => panic!("{other:?}"),
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert!(ran.load(Ordering::SeqCst) >= 2, "each instance ran at least once");
    assert!(stats.lease_busy.load(Ordering::Relaxed) > 0);
    assert_eq!(fake.entity_count("endpointleases"), 0, "every lease released");
}
