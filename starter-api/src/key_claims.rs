//! Closes the window in which two requests with the same `Idempotency-Key` could both start.
//!
//! A key is found through Temporal visibility, which lists a new lifecycle a moment after its
//! start. Within this process, requests with the same key therefore take turns (one lock per
//! stripe of keys, held from lookup to start), and a key started here is remembered for
//! `REMEMBER`, well past any visibility lag. Another API replica still relies on visibility.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::{Mutex as AsyncMutex, MutexGuard};

/// How long a key started here is answered from memory.
const REMEMBER: Duration = Duration::from_secs(600);
/// Keys remembered at most; the oldest are forgotten first, so memory stays bounded.
const MAX_REMEMBERED: usize = 100_000;
const STRIPES: usize = 64;

type TenantKey = (String, String);

pub struct KeyClaims {
    stripes: Vec<AsyncMutex<()>>,
    hasher: RandomState,
    recent: Mutex<Recent>,
}

#[derive(Default)]
struct Recent {
    by_key: HashMap<TenantKey, (String, Instant)>,
    order: VecDeque<(Instant, TenantKey)>,
}

impl Default for KeyClaims {
    fn default() -> Self {
        Self {
            stripes: (0..STRIPES).map(|_| AsyncMutex::new(())).collect(),
            hasher: RandomState::new(),
            recent: Mutex::default(),
        }
    }
}

impl KeyClaims {
    /// Waits for this key's turn; hold the guard until the lifecycle has started or not.
    pub(crate) async fn turn(&self, tenant: &str, key: &str) -> MutexGuard<'_, ()> {
        let stripe = self.hasher.hash_one((tenant, key)) as usize % STRIPES;
        self.stripes[stripe].lock().await
    }

    /// The certificate id this process started under `key` lately, if any.
    pub(crate) fn started_here(&self, tenant: &str, key: &str) -> Option<String> {
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        recent.forget_expired(Instant::now());
        recent
            .by_key
            .get(&(tenant.to_string(), key.to_string()))
            .map(|(id, _)| id.clone())
    }

    /// Remembers that `key` started `certificate_id`.
    pub(crate) fn remember(&self, tenant: &str, key: &str, certificate_id: &str) {
        let now = Instant::now();
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
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
        let recent = claims.recent.lock().unwrap();
        assert_eq!(recent.order.len(), MAX_REMEMBERED);
        assert_eq!(recent.by_key.len(), MAX_REMEMBERED);
    }

    #[tokio::test]
    async fn the_same_key_takes_turns() {
        let claims = KeyClaims::default();
        let first = claims.turn("acme", "k").await;
        let second = tokio::time::timeout(Duration::from_millis(50), claims.turn("acme", "k"));
        assert!(
            second.await.is_err(),
            "a second holder while the first holds"
        );
        drop(first);
        let _again = claims.turn("acme", "k").await;
    }
}
