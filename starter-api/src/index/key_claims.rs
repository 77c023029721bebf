//! Closes the window in which two requests with the same `Idempotency-Key` could both start.
//!
//! A key is found through Temporal visibility, which lists a new lifecycle a moment after its
//! start. Within this process, requests with the same key therefore take turns (a lock per
//! key, held from lookup to the start's answer), and a key started here is remembered for
//! `REMEMBER`, well past any visibility lag. Another API replica still relies on visibility.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

/// How long a key started here is answered from memory.
const REMEMBER: Duration = Duration::from_secs(600);
/// Keys remembered at most; the oldest are forgotten first, so memory stays bounded.
const MAX_REMEMBERED: usize = 100_000;
/// How long a request waits for another with its key before it is told to retry.
pub(crate) const TURN_WAIT: Duration = Duration::from_secs(15);

type TenantKey = (String, String);

#[derive(Default)]
pub struct KeyClaims {
    /// One lock per key some request holds or waits for; dropped with its last user.
    turns: Mutex<HashMap<TenantKey, Arc<AsyncMutex<()>>>>,
    recent: Mutex<Recent>,
}

#[derive(Default)]
struct Recent {
    by_key: HashMap<TenantKey, (String, Instant)>,
    order: VecDeque<(Instant, TenantKey)>,
}

/// This request's turn with its key; the next request with the key waits until it drops.
pub(crate) struct Turn {
    claims: Arc<KeyClaims>,
    key: TenantKey,
    guard: Option<OwnedMutexGuard<()>>,
}

impl Drop for Turn {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut turns = lock(&self.claims.turns);
        if turns
            .get(&self.key)
            .is_some_and(|m| Arc::strong_count(m) == 1)
        {
            turns.remove(&self.key);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl KeyClaims {
    /// Waits up to [`TURN_WAIT`] for this key's turn; `None` if another request kept it.
    pub(crate) async fn turn(self: &Arc<Self>, tenant: &str, key: &str) -> Option<Turn> {
        let key = (tenant.to_string(), key.to_string());
        let mutex = lock(&self.turns).entry(key.clone()).or_default().clone();
        // Made before the wait, so that a request that gives up still lets its entry go.
        let mut turn = Turn {
            claims: self.clone(),
            key,
            guard: None,
        };
        turn.guard = Some(
            tokio::time::timeout(TURN_WAIT, mutex.lock_owned())
                .await
                .ok()?,
        );
        Some(turn)
    }

    /// The certificate id this process started under `key` lately, if any.
    pub(crate) fn started_here(&self, tenant: &str, key: &str) -> Option<String> {
        let mut recent = lock(&self.recent);
        recent.forget_expired(Instant::now());
        recent
            .by_key
            .get(&(tenant.to_string(), key.to_string()))
            .map(|(id, _)| id.clone())
    }

    /// Remembers that `key` started `certificate_id`.
    pub(crate) fn remember(&self, tenant: &str, key: &str, certificate_id: &str) {
        let mut recent = lock(&self.recent);
        let now = Instant::now();
        recent.forget_expired(now);
        while recent.order.len() >= MAX_REMEMBERED {
            recent.forget_oldest();
        }
        let tenant_key = (tenant.to_string(), key.to_string());
        recent
            .by_key
            .insert(tenant_key.clone(), (certificate_id.to_string(), now));
        recent.order.push_back((now, tenant_key));
    }

    /// Forgets `key`: its lifecycle is gone, so visibility is asked again.
    pub(crate) fn forget(&self, tenant: &str, key: &str) {
        lock(&self.recent)
            .by_key
            .remove(&(tenant.to_string(), key.to_string()));
    }
}

impl Recent {
    fn forget_expired(&mut self, now: Instant) {
        while self
            .order
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) >= REMEMBER)
        {
            self.forget_oldest();
        }
    }

    fn forget_oldest(&mut self) {
        if let Some((at, key)) = self.order.pop_front()
            && self.by_key.get(&key).is_some_and(|(_, since)| *since == at)
        {
            self.by_key.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_per_tenant_and_stays_bounded() {
        let claims = KeyClaims::default();
        claims.remember("acme", "k1", "cert-a");
        assert_eq!(claims.started_here("acme", "k1").as_deref(), Some("cert-a"));
        assert_eq!(claims.started_here("globex", "k1"), None);
        for n in 0..MAX_REMEMBERED {
            claims.remember("acme", &format!("n{n}"), "x");
        }
        assert_eq!(
            claims.started_here("acme", "k1"),
            None,
            "the oldest is forgotten"
        );
        let recent = lock(&claims.recent);
        assert_eq!(recent.order.len(), MAX_REMEMBERED);
        assert_eq!(recent.by_key.len(), MAX_REMEMBERED);
    }

    #[tokio::test(start_paused = true)]
    async fn the_same_key_takes_turns_and_others_do_not_wait() {
        let claims = Arc::new(KeyClaims::default());
        let first = claims.turn("acme", "k").await.unwrap();
        let _other_key = claims.turn("acme", "k2").await.unwrap();
        let _other_tenant = claims.turn("globex", "k").await.unwrap();
        // A second request with the key waits, then gives up after TURN_WAIT.
        assert!(claims.turn("acme", "k").await.is_none());
        let waiting = tokio::spawn({
            let claims = claims.clone();
            async move { claims.turn("acme", "k").await.is_some() }
        });
        tokio::time::sleep(TURN_WAIT / 2).await;
        drop(first);
        assert!(
            waiting.await.unwrap(),
            "the turn passes once the first lets go"
        );
    }

    #[tokio::test]
    async fn a_key_nobody_holds_keeps_no_lock() {
        let claims = Arc::new(KeyClaims::default());
        drop(claims.turn("acme", "k").await.unwrap());
        assert!(claims.turn("acme", "k").await.is_some());
        assert!(lock(&claims.turns).is_empty());
    }
}
