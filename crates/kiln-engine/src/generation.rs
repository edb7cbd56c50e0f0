//! The generation engine: continuous batching of decoder requests on a dedicated thread.
//!
//! Every step runs one batched forward pass over all active sequences: each decoding sequence
//! contributes its last token, each prefilling sequence a chunk of its prompt (so a long prompt
//! never stalls running streams for long). Sequences join between steps when a slot and KV
//! budget are free, and leave when they finish or their client goes away. A prompt that shares
//! a prefix with an earlier sequence starts from that sequence's KV cache ([`PrefixCache`]).
//! Each step runs on one of the kernel threads, so the whole pool computes it.

use crate::idle::{earliest, IdleRelease};
use crate::prefix_cache::PrefixCache;
use crate::queue::{BoundedQueue, Waited};
use crate::EngineError;
use kiln_core::models::llama::{KvCache, LogitsWanted, SequenceStep};
use kiln_core::sampling::{Sampler, SamplingParams};
use kiln_core::text_stream::TextStream;
use kiln_core::ChatModel;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Limits of one generation engine.
#[derive(Debug, Clone)]
pub struct GenerationConfig {
    /// Most sequences decoded together.
    pub max_sequences: usize,
    /// Most KV-cache positions reserved over all running sequences.
    pub max_kv_tokens: usize,
    /// Most prompt tokens one sequence prefills per step.
    pub prefill_chunk: usize,
    /// Most requests waiting for a slot; beyond it submissions are refused.
    pub max_queue: usize,
    /// KV positions kept from finished sequences for prompt-prefix reuse (0 turns reuse off).
    pub prefix_cache_tokens: usize,
    /// How long a prefix-cache entry is kept after its last use (for ever, if `None`).
    pub prefix_cache_ttl: Option<Duration>,
    /// Idle time after which freed heap memory is returned to the OS (never, if `None`).
    pub release_memory_after: Option<Duration>,
}

impl Default for GenerationConfig {
    fn default() -> Self {
        Self {
            max_sequences: 16,
            max_kv_tokens: 65_536,
            prefill_chunk: 256,
            max_queue: 64,
            prefix_cache_tokens: 4096,
            prefix_cache_ttl: Some(Duration::from_secs(300)),
            release_memory_after: Some(Duration::from_secs(5)),
        }
    }
}

/// What a caller asks to generate.
#[derive(Debug, Clone)]
pub struct GenerationRequest {
    /// Prompt token ids.
    pub prompt: Vec<u32>,
    /// Sampling settings.
    pub params: SamplingParams,
    /// Most tokens to generate.
    pub max_tokens: usize,
    /// Strings that end generation; they are not emitted.
    pub stop: Vec<String>,
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// A stop token or stop string.
    Stop,
    /// `max_tokens` or the context length was reached.
    Length,
}

impl FinishReason {
    /// OpenAI's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

/// Events streamed to the caller.
#[derive(Debug, Clone, PartialEq)]
pub enum GenerationEvent {
    /// New text (possibly empty while a multi-byte character or a possible stop string is pending).
    Text(String),
    /// Generation finished.
    Done {
        /// Why.
        reason: FinishReason,
        /// Prompt length in tokens.
        prompt_tokens: usize,
        /// Tokens generated.
        completion_tokens: usize,
    },
    /// Generation failed.
    Error(String),
}

struct Job {
    request: GenerationRequest,
    events: mpsc::UnboundedSender<GenerationEvent>,
}

/// A decoder model behind a bounded queue and a continuous-batching thread.
pub struct GenerationEngine {
    name: String,
    model: Arc<ChatModel>,
    queue: Arc<BoundedQueue<Job>>,
    gauges: Arc<Gauges>,
    config: GenerationConfig,
    worker: Option<std::thread::JoinHandle<()>>,
}

impl GenerationEngine {
    /// Starts the engine thread for `model`, served under `name`.
    pub fn start(name: impl Into<String>, model: ChatModel, config: GenerationConfig) -> Self {
        let name = name.into();
        let model = Arc::new(model);
        let queue = Arc::new(BoundedQueue::new(config.max_queue.max(1)));
        let gauges = Arc::new(Gauges::default());
        let worker = {
            let (model, queue, config, gauges) =
                (model.clone(), queue.clone(), config.clone(), gauges.clone());
            std::thread::Builder::new()
                .name(format!("kiln-gen-{name}"))
                .spawn(move || Scheduler::new(&model, &config, &gauges).run(&queue))
                .expect("spawning the generation thread")
        };
        Self {
            name,
            model,
            queue,
            gauges,
            config,
            worker: Some(worker),
        }
    }

    /// The name the model is served under.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The model (tokenizer, template, configuration).
    pub fn model(&self) -> &ChatModel {
        &self.model
    }

    /// Longest prompt plus completion one request may use.
    pub fn max_context(&self) -> usize {
        self.model
            .model
            .max_positions()
            .min(self.config.max_kv_tokens)
    }

    /// Requests waiting for a slot.
    pub fn queue_depth(&self) -> usize {
        self.queue.len()
    }

    /// Sequences being prefilled or decoded.
    pub fn running_sequences(&self) -> usize {
        self.gauges.running.load(Ordering::Relaxed)
    }

    /// KV-cache positions reserved by the running sequences.
    pub fn reserved_kv_tokens(&self) -> usize {
        self.gauges.kv_reserved.load(Ordering::Relaxed)
    }

    /// KV-cache positions the running sequences may reserve in all.
    pub fn kv_capacity(&self) -> usize {
        self.config.max_kv_tokens
    }

    /// KV positions the prefix cache holds now.
    pub fn prefix_cache_tokens(&self) -> usize {
        self.gauges.prefix_positions.load(Ordering::Relaxed)
    }

    /// Prompt tokens taken from the prefix cache instead of being prefilled, since the start.
    pub fn reused_prompt_tokens(&self) -> usize {
        self.gauges.reused.load(Ordering::Relaxed)
    }

    /// Sequences that started in the emptied KV cache of a finished one, since the start.
    pub fn recycled_kv_caches(&self) -> usize {
        self.gauges.recycled.load(Ordering::Relaxed)
    }

    /// Queues a request; events arrive on the returned channel. Dropping the receiver cancels it.
    pub fn submit(
        &self,
        request: GenerationRequest,
    ) -> Result<mpsc::UnboundedReceiver<GenerationEvent>, EngineError> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.queue.admit(
            Job {
                request,
                events: tx,
            },
            &self.name,
        )?;
        Ok(rx)
    }

    /// Stops accepting work, finishes running and queued sequences, and joins the thread.
    pub fn shutdown(&mut self) {
        self.queue.close();
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

impl Drop for GenerationEngine {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// One running sequence.
struct Sequence {
    job: Job,
    cache: KvCache,
    sampler: Sampler,
    prefilled: usize,
    generated: Vec<u32>,
    /// The text of `generated`, decoded step by step.
    text: TextStream,
    emitted_bytes: usize,
    reserved: usize,
}

/// What the scheduler publishes for the metrics.
#[derive(Default)]
struct Gauges {
    /// Running sequences.
    running: AtomicUsize,
    /// Total of prompt tokens reused from the prefix cache.
    reused: AtomicUsize,
    /// Sequences started in a recycled cache.
    recycled: AtomicUsize,
    /// KV positions reserved by running sequences.
    kv_reserved: AtomicUsize,
    /// KV positions held by the prefix cache.
    prefix_positions: AtomicUsize,
}

struct Scheduler<'a> {
    model: &'a ChatModel,
    config: &'a GenerationConfig,
    running: Vec<Sequence>,
    reserved: usize,
    gauges: &'a Gauges,
    /// Caches of finished sequences, for prompts that share their prefix.
    prefix: PrefixCache,
    /// Caches of finished sequences that the prefix cache did not keep (or let go), emptied,
    /// for new sequences: their memory is mapped already, where a new cache's pages are
    /// faulted in and zeroed by the kernel as it grows, on the step's thread while the other
    /// kernel threads wait (5.6% of the samples with 8 SmolLM2 streams, perf 2026-12-03). At
    /// most `max_sequences` of them, allocating at most [`SPARE_POSITIONS`] positions' bytes
    /// in all; dropped before an idle release.
    spare: Vec<KvCache>,
    /// Bytes the spare caches hold allocated.
    spare_bytes: usize,
    /// When to hand freed memory back to the OS once idle.
    idle: IdleRelease,
    /// The last step's logits, kept for the next step while sequences run (a batch's logits
    /// are megabytes: allocating them afresh cost page faults at every step).
    logits: Vec<f32>,
}

impl<'a> Scheduler<'a> {
    fn new(model: &'a ChatModel, config: &'a GenerationConfig, gauges: &'a Gauges) -> Self {
        Self {
            model,
            config,
            running: Vec::new(),
            reserved: 0,
            gauges,
            prefix: PrefixCache::new(config.prefix_cache_tokens, config.prefix_cache_ttl),
            spare: Vec::new(),
            spare_bytes: 0,
            idle: IdleRelease::new(config.release_memory_after),
            logits: Vec::new(),
        }
    }

    /// Publishes the running count and KV reservation.
    fn publish(&self) {
        self.gauges
            .running
            .store(self.running.len(), Ordering::Relaxed);
        self.gauges
            .kv_reserved
            .store(self.reserved, Ordering::Relaxed);
        self.gauges
            .prefix_positions
            .store(self.prefix.positions(), Ordering::Relaxed);
    }

    /// Drops expired prefix-cache entries and, once idle long enough, returns freed memory.
    fn tidy(&mut self, now: Instant) {
        if self.prefix.expire(now) > 0 {
            self.idle.freed(now);
            self.publish();
        }
        if self.running.is_empty() {
            if self.idle.due().is_some_and(|due| due <= now) {
                // Spare caches go first, so the release returns their memory too.
                self.spare = Vec::new();
                self.spare_bytes = 0;
            }
            self.idle.release_if_due(now);
        }
    }

    /// Keeps a sequence's cache for later prompts that share its tokens, or else, emptied, for
    /// the next new sequence (as are caches the prefix cache lets go).
    fn retire(&mut self, s: Sequence) {
        let unkept = if self.config.prefix_cache_tokens == 0 {
            vec![s.cache]
        } else {
            let tokens: Vec<u32> = s
                .job
                .request
                .prompt
                .iter()
                .chain(&s.generated)
                .copied()
                .take(s.cache.len())
                .collect();
            self.prefix.insert(tokens, s.cache, Instant::now())
        };
        for mut cache in unkept {
            let position_bytes = cache.bytes() / cache.len().max(1);
            cache.clear();
            let size = cache.allocated_bytes();
            if self.spare.len() < self.config.max_sequences
                && self.spare_bytes + size <= SPARE_POSITIONS * position_bytes
            {
                self.spare_bytes += size;
                self.spare.push(cache);
            }
        }
    }

    /// An empty cache for `capacity` positions: a spare one if there is one.
    fn empty_cache(&mut self, capacity: usize) -> KvCache {
        match self.spare.pop() {
            Some(mut cache) => {
                self.spare_bytes -= cache.allocated_bytes();
                cache.set_capacity(capacity);
                self.gauges.recycled.fetch_add(1, Ordering::Relaxed);
                cache
            }
            None => self.model.model.new_cache(capacity),
        }
    }

    fn run(mut self, queue: &BoundedQueue<Job>) {
        loop {
            self.tidy(Instant::now());
            if self.running.is_empty() {
                let wake = earliest(self.idle.due(), self.prefix.next_expiry());
                match queue.pop_wait_until(wake, |q| q.pop_front()) {
                    Waited::Took(Some(job)) => self.admit(job),
                    Waited::Took(None) | Waited::TimedOut => continue,
                    Waited::Closed => return,
                }
            }
            // Admit waiting requests while slots and KV budget allow.
            while self.running.len() < self.config.max_sequences {
                let budget = self.config.max_kv_tokens - self.reserved;
                let next = queue.try_take(|q| {
                    let need = q.front().map_or(usize::MAX, |j| reservation(&j.request));
                    if need <= budget || self.running.is_empty() {
                        q.pop_front()
                    } else {
                        None
                    }
                });
                match next {
                    Some(Some(job)) => self.admit(job),
                    _ => break,
                }
            }
            // A client that went away frees its slot here, before the next step.
            let (gone, kept): (Vec<Sequence>, Vec<Sequence>) = std::mem::take(&mut self.running)
                .into_iter()
                .partition(|s| s.job.events.is_closed());
            self.running = kept;
            if !gone.is_empty() {
                // Their caches may become spares: a release falls due for them too.
                self.idle.worked(Instant::now());
            }
            for s in gone {
                self.retire(s);
            }
            self.reserved = self.running.iter().map(|s| s.reserved).sum();
            self.publish();
            if !self.running.is_empty() {
                // The step runs on a kernel thread, which then works alongside the others.
                kiln_kernels::parallel::on_kernel_threads(|| self.step());
                self.idle.worked(Instant::now());
            }
            if self.running.is_empty() {
                // Idle: the buffer goes, so that the idle release can hand its memory back.
                self.logits = Vec::new();
            }
            self.publish();
        }
    }

    fn admit(&mut self, job: Job) {
        let r = &job.request;
        let max = self
            .model
            .model
            .max_positions()
            .min(self.config.max_kv_tokens);
        if r.prompt.is_empty() || r.prompt.len() >= max {
            let _ = job.events.send(GenerationEvent::Error(format!(
                "the prompt has {} tokens; this model accepts 1 to {}",
                r.prompt.len(),
                max - 1
            )));
            return;
        }
        let reserved = reservation(r).min(max);
        let sampler = Sampler::new(r.params.clone());
        self.reserved += reserved;
        let (prefilled, cache) = match self.prefix.lookup(&r.prompt, Instant::now()) {
            Some((shared, mut cache)) => {
                cache.set_capacity(reserved);
                self.gauges.reused.fetch_add(shared, Ordering::Relaxed);
                (shared, cache)
            }
            None => (0, self.empty_cache(reserved)),
        };
        self.running.push(Sequence {
            cache,
            job,
            sampler,
            prefilled,
            generated: Vec::new(),
            text: TextStream::new(),
            emitted_bytes: 0,
            reserved,
        });
    }

    /// One batched forward pass over every running sequence, then sampling and streaming.
    fn step(&mut self) {
        let started = Instant::now();
        let chunk = self.config.prefill_chunk.max(1);
        let inputs: Vec<Vec<u32>> = self
            .running
            .iter()
            .map(|s| {
                let p = &s.job.request.prompt;
                if s.prefilled < p.len() {
                    p[s.prefilled..p.len().min(s.prefilled + chunk)].to_vec()
                } else {
                    vec![*s.generated.last().expect("a decoding sequence has a token")]
                }
            })
            .collect();
        let mut steps: Vec<SequenceStep<'_>> = self
            .running
            .iter_mut()
            .zip(&inputs)
            .map(|(s, t)| {
                // A prompt chunk before the prompt's last needs no logits.
                let wanted = if s.prefilled + t.len() < s.job.request.prompt.len() {
                    LogitsWanted::Nothing
                } else {
                    LogitsWanted::All
                };
                SequenceStep {
                    tokens: t,
                    cache: &mut s.cache,
                    wanted,
                }
            })
            .collect();
        let result = self
            .model
            .model
            .forward_batch_into(&mut steps, &mut self.logits);
        drop(steps);
        if let Err(e) = result {
            for s in self.running.drain(..) {
                let _ = s.job.events.send(GenerationEvent::Error(e.to_string()));
            }
            return;
        }
        let vocab = self.model.model.config().vocab_size;
        // The sequences past their prompt draw their next token. Each sampler has its own
        // state, so the draws are spread over the kernel threads: a draw reads a whole
        // vocabulary's logits (SmolLM2 8 streams, temperature 0.7 and top-p 0.9: 8 draws of
        // about 0.1 ms per step on one thread).
        let mut draws: Vec<Draw<'_>> = Vec::with_capacity(self.running.len());
        for (i, (s, l)) in self
            .running
            .iter_mut()
            .zip(self.logits.chunks_exact(vocab))
            .enumerate()
        {
            let p_len = s.job.request.prompt.len();
            if s.prefilled < p_len {
                s.prefilled += inputs[i].len();
                if s.prefilled < p_len {
                    continue;
                }
            }
            draws.push(Draw {
                index: i,
                sampler: &mut s.sampler,
                logits: l,
                history: &s.generated,
                token: 0,
            });
        }
        let draw = |d: &mut Draw<'_>| d.token = d.sampler.sample(d.logits, d.history);
        if draws.len() > 1 {
            kiln_kernels::parallel::for_each_mut(&mut draws, draw);
        } else {
            draws.iter_mut().for_each(draw);
        }
        let picked: Vec<(usize, u32)> = draws.into_iter().map(|d| (d.index, d.token)).collect();
        let mut finished = Vec::new();
        for (i, token) in picked {
            if let Some(reason) = advance(self.model, &mut self.running[i], token) {
                finished.push((i, reason));
            }
        }
        // Finished sequences leave the running set (and its published count) before their
        // clients hear `Done`, so a client that reads metrics right after sees them gone.
        let mut done = Vec::with_capacity(finished.len());
        for (i, reason) in finished.into_iter().rev() {
            let s = self.running.swap_remove(i);
            self.reserved -= s.reserved;
            done.push((s, reason));
        }
        self.publish();
        for (s, reason) in done {
            let event = GenerationEvent::Done {
                reason,
                prompt_tokens: s.job.request.prompt.len(),
                completion_tokens: s.generated.len(),
            };
            let events = s.job.events.clone();
            // Retired into the prefix cache first, so the client's next request can reuse it.
            self.retire(s);
            let _ = events.send(event);
        }
        tracing::trace!(
            sequences = inputs.len(),
            ms = started.elapsed().as_secs_f64() * 1e3,
            "step"
        );
    }
}

/// One sequence's draw of its next token in a step.
struct Draw<'a> {
    /// The sequence's place in the running set.
    index: usize,
    /// Its sampler.
    sampler: &'a mut Sampler,
    /// Its row of the step's logits.
    logits: &'a [f32],
    /// What it generated so far (for the penalties).
    history: &'a [u32],
    /// The token drawn.
    token: u32,
}

/// Positions' worth of bytes that spare KV caches may hold allocated in all (as many as the
/// prefix cache keeps by default): a few caches of long sequences, or many short ones.
const SPARE_POSITIONS: usize = 4096;

/// KV positions a request may need.
fn reservation(r: &GenerationRequest) -> usize {
    r.prompt.len().saturating_add(r.max_tokens)
}

/// Records `token`, streams the text it completes, and tells whether the sequence is done.
fn advance(model: &ChatModel, s: &mut Sequence, token: u32) -> Option<FinishReason> {
    let tok = &model.tokenizer;
    if tok.is_stop(token) {
        flush(model, s, None);
        return Some(FinishReason::Stop);
    }
    s.generated.push(token);
    // Only the new tokens are decoded (a window of them); a decoding error adds no text.
    let _ = s.text.push(tok, &s.generated);
    let text = s.text.text();
    let stops = &s.job.request.stop;
    // A stop string ends generation and is not emitted.
    if let Some(at) = find_stop(stops, text, s.emitted_bytes) {
        flush(model, s, Some(at));
        return Some(FinishReason::Stop);
    }
    // Hold back any tail that could begin a stop string (the stream holds back incomplete
    // characters itself).
    let mut safe = text.len();
    for st in stops {
        for k in (1..st.len()).rev() {
            if st.is_char_boundary(k) && text.ends_with(&st[..k]) {
                safe = safe.min(text.len() - k);
                break;
            }
        }
    }
    if safe > s.emitted_bytes && text.is_char_boundary(safe) {
        let _ = s.job.events.send(GenerationEvent::Text(
            text[s.emitted_bytes..safe].to_string(),
        ));
        s.emitted_bytes = safe;
    }
    let budget_left = s.cache.len() + 1 < s.cache.capacity();
    if s.generated.len() >= s.job.request.max_tokens || !budget_left {
        let stopped = flush(model, s, None);
        return Some(if stopped {
            FinishReason::Stop
        } else {
            FinishReason::Length
        });
    }
    None
}

/// The start of the first stop string in `text` at or after byte `from`.
fn find_stop(stops: &[String], text: &str, from: usize) -> Option<usize> {
    stops
        .iter()
        .filter(|st| !st.is_empty())
        .filter_map(|st| {
            text[from.min(text.len())..]
                .find(st.as_str())
                .map(|p| p + from)
        })
        .min()
}

/// Emits what was held back: the text up to byte `cut`, or all of it (an incomplete last
/// character included, as U+FFFD) up to the first stop string in it. Says whether a stop
/// string cut the text.
fn flush(model: &ChatModel, s: &mut Sequence, cut: Option<usize>) -> bool {
    let mut stopped = cut.is_some();
    let cut = cut.or_else(|| {
        // The text the stream held back joins now; a stop string may lie in it.
        let _ = s.text.finish(&model.tokenizer, &s.generated);
        let at = find_stop(&s.job.request.stop, s.text.text(), s.emitted_bytes);
        stopped = at.is_some();
        at
    });
    let text = s.text.text();
    let end = cut.unwrap_or(text.len());
    if end > s.emitted_bytes && text.is_char_boundary(end) && text.is_char_boundary(s.emitted_bytes)
    {
        let _ = s.job.events.send(GenerationEvent::Text(
            text[s.emitted_bytes..end].to_string(),
        ));
        s.emitted_bytes = end;
    }
    stopped
}
