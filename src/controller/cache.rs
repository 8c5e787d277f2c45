//! The shared resolver cache: one ARM call per distinct workspace per refresh interval, however
//! many bindings share the workspace. Concurrent resolves of one workspace await the same
//! in-flight call (single flight).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use tokio::time::Instant;

use super::arm::{ResolveError, WorkspaceKey};

/// One finished resolve.
#[derive(Clone, Debug)]
pub struct Entry {
    pub fetched: Instant,
    pub result: Result<String, ResolveError>,
}

impl Entry {
    /// How long this entry may be served: the refresh interval for a URI, at most `error_ttl`
    /// for a failure (so a fixed role assignment is noticed soon).
    fn ttl(&self, refresh: Duration, error_ttl: Duration) -> Duration {
        match self.result {
            Ok(_) => refresh,
            Err(_) => refresh.min(error_ttl),
        }
    }
}

type InFlight = Shared<BoxFuture<'static, Entry>>;

#[derive(Default)]
struct Slot {
    last: Option<Entry>,
    in_flight: Option<InFlight>,
}

/// How fresh a cached entry must be for one lookup.
#[derive(Clone, Copy, Debug)]
pub enum Freshness {
    /// Serve anything younger than its TTL.
    Cached,
    /// The binding's spec changed: serve only entries younger than this.
    YoungerThan(Duration),
}

pub struct Cache {
    refresh: Duration,
    error_ttl: Duration,
    slots: Mutex<HashMap<WorkspaceKey, Slot>>,
}

impl Cache {
    pub fn new(refresh: Duration, error_ttl: Duration) -> Self {
        Self {
            refresh,
            error_ttl,
            slots: Mutex::default(),
        }
    }

    /// How much longer `entry` may be served.
    pub fn remaining(&self, entry: &Entry) -> Duration {
        entry
            .ttl(self.refresh, self.error_ttl)
            .saturating_sub(entry.fetched.elapsed())
    }

    /// The entry for `key`: a fresh enough cached one, the in-flight call's, or a new call made
    /// with `fetch`.
    pub async fn get<F, Fut>(&self, key: &WorkspaceKey, freshness: Freshness, fetch: F) -> Entry
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<String, ResolveError>> + Send + 'static,
    {
        let fut = {
            let mut slots = self.slots.lock().expect("cache lock");
            self.evict(&mut slots);
            let slot = slots.entry(key.clone()).or_default();
            if let Some(e) = &slot.last {
                let age = e.fetched.elapsed();
                let fresh = match freshness {
                    Freshness::Cached => age < e.ttl(self.refresh, self.error_ttl),
                    Freshness::YoungerThan(max) => age < max,
                };
                if fresh {
                    return e.clone();
                }
            }
            match &slot.in_flight {
                Some(f) => f.clone(),
                None => {
                    let call = fetch();
                    let f = async move {
                        let result = call.await;
                        Entry {
                            fetched: Instant::now(),
                            result,
                        }
                    }
                    .boxed()
                    .shared();
                    slot.in_flight = Some(f.clone());
                    f
                }
            }
        };
        let entry = fut.await;
        let mut slots = self.slots.lock().expect("cache lock");
        let slot = slots.entry(key.clone()).or_default();
        if slot.last.as_ref().is_none_or(|l| l.fetched < entry.fetched) {
            slot.last = Some(entry.clone());
        }
        if slot.in_flight.as_ref().is_some_and(|f| f.peek().is_some()) {
            slot.in_flight = None;
        }
        entry
    }

    /// Drops entries nobody asked for in a long while (deleted bindings' workspaces).
    fn evict(&self, slots: &mut HashMap<WorkspaceKey, Slot>) {
        let keep = self.refresh.saturating_mul(3).max(Duration::from_secs(60));
        slots.retain(|_, s| {
            s.in_flight.is_some() || s.last.as_ref().is_some_and(|l| l.fetched.elapsed() < keep)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::binding::AzureCloud;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const ARM_LATENCY: Duration = Duration::from_secs(1);

    fn key(ws: &str) -> WorkspaceKey {
        WorkspaceKey {
            arm_endpoint: "https://arm".into(),
            cloud: AzureCloud::AzurePublicCloud,
            subscription_id: "s".into(),
            resource_group: "rg".into(),
            workspace_name: ws.into(),
        }
    }

    /// A fetch that counts its calls and answers `uri-<n>` after `ARM_LATENCY`.
    fn counting(
        calls: &Arc<AtomicUsize>,
    ) -> impl FnOnce() -> BoxFuture<'static, Result<String, ResolveError>> + use<> {
        let calls = calls.clone();
        move || {
            async move {
                let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
                tokio::time::sleep(ARM_LATENCY).await;
                Ok(format!("uri-{n}"))
            }
            .boxed()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_lookups_share_one_call() {
        let cache = Arc::new(Cache::new(
            Duration::from_secs(300),
            Duration::from_secs(30),
        ));
        let calls = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let lookups: Vec<_> = (0..5)
            .map(|_| {
                let (cache, fetch) = (cache.clone(), counting(&calls));
                tokio::spawn(async move {
                    let asked = Instant::now();
                    let entry = cache.get(&key("a"), Freshness::Cached, fetch).await;
                    (asked, Instant::now(), entry)
                })
            })
            .collect();
        for lookup in lookups {
            let (asked, answered, entry) = lookup.await.unwrap();
            // Every lookup was asked before the call ended and answered when it ended: none
            // was served from the cache, each waited for the one call.
            assert_eq!(asked, started);
            assert_eq!(answered - asked, ARM_LATENCY);
            assert_eq!(entry.result.unwrap(), "uri-1");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // Cached afterwards: answered at once.
        let e = cache
            .get(&key("a"), Freshness::Cached, counting(&calls))
            .await;
        assert_eq!(e.result.unwrap(), "uri-1");
        assert_eq!(Instant::now() - started, ARM_LATENCY);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // Another workspace is another call.
        cache
            .get(&key("b"), Freshness::Cached, counting(&calls))
            .await;
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn expiry_and_spec_change_force_a_new_call() {
        let refresh = Duration::from_secs(60);
        let cache = Cache::new(refresh, refresh);
        let calls = Arc::new(AtomicUsize::new(0));
        let e = cache
            .get(&key("a"), Freshness::Cached, counting(&calls))
            .await;
        assert_eq!(cache.remaining(&e), refresh);
        // A spec change accepts a very young entry.
        cache
            .get(
                &key("a"),
                Freshness::YoungerThan(Duration::from_secs(5)),
                counting(&calls),
            )
            .await;
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // But not an older one.
        let e = cache
            .get(
                &key("a"),
                Freshness::YoungerThan(Duration::ZERO),
                counting(&calls),
            )
            .await;
        assert_eq!(e.result.unwrap(), "uri-2");
        tokio::time::advance(refresh - Duration::from_millis(1)).await;
        let e = cache
            .get(&key("a"), Freshness::Cached, counting(&calls))
            .await;
        assert_eq!(e.result.unwrap(), "uri-2", "still fresh");
        tokio::time::advance(Duration::from_millis(1)).await;
        let e = cache
            .get(&key("a"), Freshness::Cached, counting(&calls))
            .await;
        assert_eq!(
            e.result.unwrap(),
            "uri-3",
            "expired at the refresh interval"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn failures_expire_sooner() {
        let (refresh, error_ttl) = (Duration::from_secs(300), Duration::from_secs(30));
        let cache = Cache::new(refresh, error_ttl);
        let e = cache
            .get(&key("a"), Freshness::Cached, || async {
                Err(ResolveError::Forbidden("no".into()))
            })
            .await;
        assert!(e.result.is_err());
        assert_eq!(cache.remaining(&e), error_ttl);
        tokio::time::advance(error_ttl).await;
        assert_eq!(cache.remaining(&e), Duration::ZERO);
        let e = cache
            .get(&key("a"), Freshness::Cached, || async {
                Ok("ok".to_string())
            })
            .await;
        assert_eq!(e.result.as_deref(), Ok("ok"));
        assert_eq!(cache.remaining(&e), refresh);
    }
}
