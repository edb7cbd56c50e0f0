//! [`UsageLog`]: writes finished requests' usage to the database off the request path.

use kiln_store::{utc_day, KeyStore, UsageDelta};
use std::collections::HashMap;
use tokio::sync::{mpsc, oneshot};

enum Message {
    Record {
        key_id: String,
        day: String,
        delta: UsageDelta,
    },
    Flush(oneshot::Sender<()>),
}

/// A handle to the task that writes usage rows. Records sent through it are written in order;
/// records that arrive together are summed per key and day and written in one statement each.
#[derive(Clone)]
pub struct UsageLog {
    tx: mpsc::UnboundedSender<Message>,
}

impl UsageLog {
    /// Starts the writer task on the current Tokio runtime.
    pub fn start(store: KeyStore) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(write_loop(store, rx));
        Self { tx }
    }

    /// Queues one finished request's usage for today's row of `key_id`.
    pub fn record(&self, key_id: String, delta: UsageDelta) {
        let msg = Message::Record {
            key_id,
            day: utc_day(),
            delta,
        };
        if let Err(mpsc::error::SendError(Message::Record { key_id, delta, .. })) =
            self.tx.send(msg)
        {
            tracing::error!(key = %key_id, requests = delta.requests, prompt_tokens = delta.prompt_tokens,
                completion_tokens = delta.completion_tokens, "usage writer has stopped; usage not recorded");
        }
    }

    /// Returns once every record queued before the call is in the database.
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Message::Flush(done)).is_ok() {
            let _ = wait.await;
        }
    }
}

async fn write_loop(store: KeyStore, mut rx: mpsc::UnboundedReceiver<Message>) {
    while let Some(first) = rx.recv().await {
        let mut pending: HashMap<(String, String), UsageDelta> = HashMap::new();
        let mut flushes = Vec::new();
        let mut next = Some(first);
        while let Some(msg) = next {
            match msg {
                Message::Record { key_id, day, delta } => {
                    let sum = pending.entry((key_id, day)).or_default();
                    sum.requests += delta.requests;
                    sum.prompt_tokens += delta.prompt_tokens;
                    sum.completion_tokens += delta.completion_tokens;
                }
                Message::Flush(done) => flushes.push(done),
            }
            next = rx.try_recv().ok();
        }
        for ((key_id, day), delta) in pending {
            if let Err(e) = store.record_usage(&key_id, &day, delta).await {
                tracing::error!(key = %key_id, %day, requests = delta.requests, prompt_tokens = delta.prompt_tokens,
                    completion_tokens = delta.completion_tokens, error = %e, "cannot record usage");
            }
        }
        for done in flushes {
            let _ = done.send(());
        }
    }
}
