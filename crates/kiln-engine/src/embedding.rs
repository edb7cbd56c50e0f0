//! The embedding engine: dynamic batching of encoder requests on a dedicated compute thread.

use crate::idle::IdleRelease;
use crate::observer::{BatchReport, EngineObserver};
use crate::queue::{BoundedQueue, Waited};
use kiln_core::SentenceEmbedder;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Limits of one embedding engine.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Most tokens computed in one forward pass (a longer single request is split).
    pub max_batch_tokens: usize,
    /// Most requests merged into one batch.
    pub max_batch_requests: usize,
    /// Most requests waiting; beyond it submissions are refused.
    pub max_queue: usize,
    /// Idle time after which freed heap memory is returned to the OS (never, if `None`).
    pub release_memory_after: Option<Duration>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            max_batch_tokens: 16_384,
            max_batch_requests: 64,
            max_queue: 256,
            release_memory_after: Some(Duration::from_secs(5)),
        }
    }
}

/// Why the engine could not serve a request.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The queue is full; try again later.
    #[error("the server is overloaded: {queued} requests are already queued for model `{model}`")]
    Overloaded {
        /// The model whose queue is full.
        model: String,
        /// How many requests are waiting.
        queued: usize,
    },
    /// The engine has stopped (the server is shutting down).
    #[error("model `{0}` is shutting down")]
    Stopped(String),
    /// The model failed while computing the batch this request was in.
    #[error("inference failed: {0}")]
    Failed(String),
}

type Reply = oneshot::Sender<Result<Vec<Vec<f32>>, EngineError>>;

struct Job {
    inputs: Vec<Vec<u32>>,
    normalize: bool,
    reply: Reply,
}

impl Job {
    fn tokens(&self) -> usize {
        self.inputs.iter().map(Vec::len).sum()
    }
}

/// Embeddings that will arrive when the request's batch has run.
///
/// Dropping it before then withdraws the request: the engine skips it unless its batch already started.
pub struct PendingEmbeddings(oneshot::Receiver<Result<Vec<Vec<f32>>, EngineError>>);

impl Future for PendingEmbeddings {
    type Output = Result<Vec<Vec<f32>>, EngineError>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0)
            .poll(cx)
            .map(|r| r.unwrap_or_else(|_| Err(EngineError::Stopped(String::new()))))
    }
}

/// A sentence-embedding model behind a bounded queue and its own compute thread.
pub struct EmbeddingEngine {
    name: String,
    model: Arc<SentenceEmbedder>,
    queue: Arc<BoundedQueue<Job>>,
    observer: Arc<dyn EngineObserver>,
    worker: Option<std::thread::JoinHandle<()>>,
}

impl EmbeddingEngine {
    /// Starts the compute thread for `model`, served under `name`.
    pub fn start(
        name: impl Into<String>,
        model: SentenceEmbedder,
        config: EngineConfig,
        observer: Arc<dyn EngineObserver>,
    ) -> Self {
        let name = name.into();
        let model = Arc::new(model);
        let queue = Arc::new(BoundedQueue::new(config.max_queue.max(1)));
        let worker = {
            let (name, model, queue, observer) =
                (name.clone(), model.clone(), queue.clone(), observer.clone());
            std::thread::Builder::new()
                .name(format!("kiln-embed-{name}"))
                .spawn(move || run_batches(&name, &model, &queue, &config, &*observer))
                .expect("spawning the compute thread")
        };
        Self {
            name,
            model,
            queue,
            observer,
            worker: Some(worker),
        }
    }

    /// The name the model is served under.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The model, for tokenization and its properties.
    pub fn model(&self) -> &SentenceEmbedder {
        &self.model
    }

    /// Requests waiting for compute.
    pub fn queue_depth(&self) -> usize {
        self.queue.len()
    }

    /// Queues tokenized inputs; the result arrives through the returned future.
    pub fn submit(
        &self,
        inputs: Vec<Vec<u32>>,
        normalize: bool,
    ) -> Result<PendingEmbeddings, EngineError> {
        let (reply, rx) = oneshot::channel();
        let job = Job {
            inputs,
            normalize,
            reply,
        };
        let depth = self.queue.admit(job, &self.name)?;
        self.observer.queue_depth(&self.name, depth);
        Ok(PendingEmbeddings(rx))
    }

    /// Stops accepting work, finishes what is queued and joins the compute thread.
    pub fn shutdown(&mut self) {
        self.queue.close();
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

impl Drop for EmbeddingEngine {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Takes queued jobs greedily, in arrival order, while they fit the batch limits.
fn take_batch(queue: &mut VecDeque<Job>, config: &EngineConfig) -> Vec<Job> {
    let mut batch = Vec::new();
    let mut tokens = 0;
    while let Some(job) = queue.front() {
        let t = job.tokens();
        let fits = batch.is_empty()
            || (tokens + t <= config.max_batch_tokens && batch.len() < config.max_batch_requests);
        if !fits {
            break;
        }
        tokens += t;
        batch.push(queue.pop_front().expect("front exists"));
    }
    batch
}

fn run_batches(
    name: &str,
    model: &SentenceEmbedder,
    queue: &BoundedQueue<Job>,
    config: &EngineConfig,
    observer: &dyn EngineObserver,
) {
    let mut idle = IdleRelease::new(config.release_memory_after);
    loop {
        let jobs = match queue.pop_wait_until(idle.due(), |q| take_batch(q, config)) {
            Waited::Took(jobs) => jobs,
            Waited::TimedOut => {
                idle.release_if_due(Instant::now());
                continue;
            }
            Waited::Closed => return,
        };
        observer.queue_depth(name, queue.len());
        let (live, gone): (Vec<Job>, Vec<Job>) =
            jobs.into_iter().partition(|j| !j.reply.is_closed());
        for _ in &gone {
            observer.request_cancelled(name);
        }
        if live.is_empty() {
            continue;
        }
        let start = Instant::now();
        let sequences: Vec<&[u32]> = live
            .iter()
            .flat_map(|j| j.inputs.iter().map(Vec::as_slice))
            .collect();
        let tokens: usize = sequences.iter().map(|s| s.len()).sum();
        // Normalization differs per request, so pool unnormalized and normalize per job.
        let result = embed_in_chunks(model, &sequences, config.max_batch_tokens);
        let report = BatchReport {
            requests: live.len(),
            sequences: sequences.len(),
            tokens,
            compute: start.elapsed(),
        };
        // Report before answering, so a client that reads /metrics after its answer sees its batch.
        observer.batch_done(name, report);
        match result {
            Ok(mut vectors) => {
                let mut rest = vectors.drain(..);
                for job in live {
                    let mut mine: Vec<Vec<f32>> = rest.by_ref().take(job.inputs.len()).collect();
                    if job.normalize {
                        for v in &mut mine {
                            kiln_core::pooling::l2_normalize(v);
                        }
                    }
                    let _ = job.reply.send(Ok(mine));
                }
            }
            Err(e) => {
                tracing::warn!(model = name, error = %e, "batch failed");
                let message = e.to_string();
                for job in live {
                    let _ = job.reply.send(Err(EngineError::Failed(message.clone())));
                }
            }
        }
        idle.worked(Instant::now());
    }
}

/// Runs `sequences` through the model in forward passes of at most `budget` tokens each.
fn embed_in_chunks(
    model: &SentenceEmbedder,
    sequences: &[&[u32]],
    budget: usize,
) -> kiln_core::Result<Vec<Vec<f32>>> {
    let mut out = Vec::with_capacity(sequences.len());
    let mut start = 0;
    while start < sequences.len() {
        let mut end = start;
        let mut tokens = 0;
        while end < sequences.len() && (end == start || tokens + sequences[end].len() <= budget) {
            tokens += sequences[end].len();
            end += 1;
        }
        out.extend(model.embed_tokens(&sequences[start..end], false)?);
        start = end;
    }
    Ok(out)
}
