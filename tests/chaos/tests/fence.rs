//! Kleppmann's fencing argument made concrete: a holder paused past its lease wakes up with a
//! stale token; the lease service has already granted a higher token to a new holder, which
//! wrote first; the resource rejects the stale holder's late write.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use berth_chaos::fence::{FencedResource, StaleToken};
use berth_core::service::Acquire;
use berth_core::{Holder, LeaseKey, LeaseService, ManualClock, MemStore};

#[tokio::test]
async fn paused_holder_late_write_is_rejected() {
    let clock = Arc::new(ManualClock::at_epoch());
    let svc = LeaseService::new(Arc::new(MemStore::new()), clock.clone());
    let key = LeaseKey::new("demo", "resource").unwrap();
    let ttl = Duration::from_secs(2);
    let resource = Arc::new(FencedResource::new());

    let old = Holder::new("old").unwrap();
    let Acquire::Granted { lease, .. } = svc.acquire(&key, &old, ttl).await.unwrap() else {
        panic!("first acquire denied");
    };
    let old_token = lease.record.fencing_token.get();
    resource.write(old_token, "old: before pause").unwrap();

    // The old holder reads its token, then is paused (GC, SIGSTOP) before its next write.
    let (wake_tx, wake_rx) = tokio::sync::oneshot::channel::<()>();
    let res = resource.clone();
    let stale = tokio::spawn(async move {
        wake_rx.await.unwrap();
        res.write(old_token, "old: after pause")
    });

    // While it sleeps, its lease runs out and a new holder takes over with a higher token.
    clock.advance(ttl + Duration::from_millis(1));
    let new = Holder::new("new").unwrap();
    let Acquire::Granted { lease, .. } = svc.acquire(&key, &new, ttl).await.unwrap() else {
        panic!("takeover denied after expiry");
    };
    let new_token = lease.record.fencing_token.get();
    assert!(new_token > old_token, "{new_token} > {old_token}");
    resource.write(new_token, "new").unwrap();

    // The stale holder wakes and writes: rejected.
    wake_tx.send(()).unwrap();
    let late = stale.await.unwrap();
    assert_eq!(
        late,
        Err(StaleToken {
            token: old_token,
            highest: new_token
        })
    );
    assert_eq!(resource.value().as_deref(), Some("new"));
    assert_eq!(
        resource.accepted(),
        vec![
            (old_token, "old: before pause".to_owned()),
            (new_token, "new".to_owned()),
        ]
    );
}
