//! Delivery of Kaiten-shaped webhook events: to the space's registered external webhook when it has
//! an enabled one, else to the URL set on the handle.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::cards::lock;

/// Posts events fire-and-forget: in order through one worker, or each after a random 0–50 ms delay
/// when shuffling. No signature, no retries (like Kaiten).
pub(crate) struct Webhooks {
    url: Mutex<Option<String>>,
    shuffle: AtomicBool,
    tx: mpsc::UnboundedSender<(String, Value)>,
    pending: Arc<AtomicU64>,
    rng: Mutex<StdRng>,
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

async fn post(client: &reqwest::Client, url: &str, body: &Value) {
    match client.post(url).json(body).send().await {
        Ok(response) => tracing::debug!(url, status = %response.status(), "kaiten-sim: webhook delivered"),
        Err(error) => tracing::debug!(url, %error, "kaiten-sim: webhook delivery failed"),
    }
}

impl Webhooks {
    /// Must be called inside a tokio runtime; deliveries run on it.
    pub(crate) fn new(seed: u64) -> Webhooks {
        let runtime = tokio::runtime::Handle::current();
        let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).no_proxy().build().unwrap_or_default();
        let pending = Arc::new(AtomicU64::new(0));
        let (tx, mut rx) = mpsc::unbounded_channel::<(String, Value)>();
        {
            let client = client.clone();
            let pending = pending.clone();
            runtime.spawn(async move {
                while let Some((url, body)) = rx.recv().await {
                    post(&client, &url, &body).await;
                    pending.fetch_sub(1, Ordering::SeqCst);
                }
            });
        }
        Webhooks {
            url: Mutex::new(None),
            shuffle: AtomicBool::new(false),
            tx,
            pending,
            rng: Mutex::new(StdRng::seed_from_u64(seed ^ 0x000B_00C5)),
            client,
            runtime,
        }
    }

    pub(crate) fn set_url(&self, url: Option<String>) {
        *lock(&self.url) = url;
    }

    pub(crate) fn set_shuffle(&self, shuffle: bool) {
        self.shuffle.store(shuffle, Ordering::SeqCst);
    }

    /// Queues the events for delivery, each to its own target (the enabled external webhook of its
    /// space) or else to the global URL; an event with neither is dropped.
    pub(crate) fn send(&self, events: Vec<(Option<String>, Value)>) {
        let global = lock(&self.url).clone();
        for (target, body) in events {
            let Some(url) = target.or_else(|| global.clone()) else {
                continue;
            };
            self.pending.fetch_add(1, Ordering::SeqCst);
            if self.shuffle.load(Ordering::SeqCst) {
                let delay = Duration::from_millis(lock(&self.rng).random_range(0..=50));
                let (client, pending, url) = (self.client.clone(), self.pending.clone(), url.clone());
                self.runtime.spawn(async move {
                    tokio::time::sleep(delay).await;
                    post(&client, &url, &body).await;
                    pending.fetch_sub(1, Ordering::SeqCst);
                });
            } else if self.tx.send((url.clone(), body)).is_err() {
                self.pending.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }

    /// Deliveries queued but not yet attempted to the end.
    pub(crate) fn pending(&self) -> u64 {
        self.pending.load(Ordering::SeqCst)
    }
}
