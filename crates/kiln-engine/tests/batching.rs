//! The embedding engine's scheduling: batching, routing answers, backpressure, cancellation.

use kiln_core::testing::{write_tiny_bert, TinyBertSpec};
use kiln_core::{EmbedderOptions, SentenceEmbedder};
use kiln_engine::{
    BatchReport, EmbeddingEngine, EngineConfig, EngineError, EngineObserver, NoopObserver,
};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};

fn tiny_model() -> (tempfile::TempDir, SentenceEmbedder) {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_bert(dir.path(), &TinyBertSpec::default()).unwrap();
    let m = SentenceEmbedder::load(dir.path(), &EmbedderOptions::default()).unwrap();
    (dir, m)
}

fn ids(m: &SentenceEmbedder, text: &str) -> Vec<u32> {
    m.tokenize(text, true).unwrap().ids
}

#[tokio::test]
async fn each_caller_gets_its_own_vectors() {
    let (_d, m) = tiny_model();
    let texts = ["the cat", "a dog sat on the mat", "hello world", "kiln"];
    let expected = m.embed(&texts).unwrap();
    let inputs: Vec<Vec<u32>> = texts.iter().map(|t| ids(&m, t)).collect();
    let engine = EmbeddingEngine::start("tiny", m, EngineConfig::default(), Arc::new(NoopObserver));
    let pending: Vec<_> = inputs
        .iter()
        .map(|i| engine.submit(vec![i.clone()], true).unwrap())
        .collect();
    for (p, e) in pending.into_iter().zip(&expected) {
        let got = p.await.unwrap();
        assert_eq!(got.len(), 1);
        let diff = got[0]
            .iter()
            .zip(e)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(diff < 1e-5);
    }
}

#[tokio::test]
async fn a_request_larger_than_the_token_budget_is_split_and_still_correct() {
    let (_d, m) = tiny_model();
    let texts: Vec<String> = (0..20)
        .map(|i| format!("the cat number {i} sat on the mat"))
        .collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let expected = m.embed(&refs).unwrap();
    let inputs: Vec<Vec<u32>> = refs.iter().map(|t| ids(&m, t)).collect();
    let cfg = EngineConfig {
        max_batch_tokens: 30,
        ..Default::default()
    };
    let engine = EmbeddingEngine::start("tiny", m, cfg, Arc::new(NoopObserver));
    let got = engine.submit(inputs, true).unwrap().await.unwrap();
    assert_eq!(got.len(), 20);
    for (g, e) in got.iter().zip(&expected) {
        assert!(g.iter().zip(e).all(|(a, b)| (a - b).abs() < 1e-5));
    }
}

#[tokio::test]
async fn normalization_is_per_request() {
    let (_d, m) = tiny_model();
    let input = ids(&m, "hello world");
    let engine = EmbeddingEngine::start("tiny", m, EngineConfig::default(), Arc::new(NoopObserver));
    let raw = engine
        .submit(vec![input.clone()], false)
        .unwrap()
        .await
        .unwrap();
    let unit = engine.submit(vec![input], true).unwrap().await.unwrap();
    let n = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((n(&unit[0]) - 1.0).abs() < 1e-5);
    assert!((n(&raw[0]) - 1.0).abs() > 1e-3);
}

/// Parks the compute thread inside the first `batch_done` until the test lets it go.
struct Gate {
    entered: Mutex<Option<mpsc::Sender<()>>>,
    release: Mutex<mpsc::Receiver<()>>,
    cancelled: AtomicUsize,
    computed_sequences: AtomicUsize,
}

impl EngineObserver for Gate {
    fn batch_done(&self, _m: &str, r: BatchReport) {
        self.computed_sequences
            .fetch_add(r.sequences, Ordering::SeqCst);
        if let Some(tx) = self.entered.lock().unwrap().take() {
            tx.send(()).unwrap();
            self.release.lock().unwrap().recv().unwrap();
        }
    }
    fn request_cancelled(&self, _m: &str) {
        self.cancelled.fetch_add(1, Ordering::SeqCst);
    }
}

fn gated() -> (Arc<Gate>, mpsc::Receiver<()>, mpsc::Sender<()>) {
    let (entered_tx, entered_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel();
    let gate = Arc::new(Gate {
        entered: Mutex::new(Some(entered_tx)),
        release: Mutex::new(release_rx),
        cancelled: AtomicUsize::new(0),
        computed_sequences: AtomicUsize::new(0),
    });
    (gate, entered_rx, release_tx)
}

#[tokio::test]
async fn a_full_queue_refuses_at_once() {
    let (_d, m) = tiny_model();
    let input = ids(&m, "hello");
    let (gate, entered, release) = gated();
    let cfg = EngineConfig {
        max_queue: 3,
        ..Default::default()
    };
    let engine = EmbeddingEngine::start("tiny", m, cfg, gate.clone());
    let first = engine.submit(vec![input.clone()], true).unwrap();
    entered.recv().unwrap(); // the compute thread is busy and holds nothing queued
    let queued: Vec<_> = (0..3)
        .map(|_| engine.submit(vec![input.clone()], true).unwrap())
        .collect();
    match engine.submit(vec![input.clone()], true) {
        Err(EngineError::Overloaded { queued, model }) => {
            assert_eq!(queued, 3);
            assert_eq!(model, "tiny");
        }
        other => panic!("expected Overloaded, got {:?}", other.map(|_| ())),
    }
    assert_eq!(engine.queue_depth(), 3);
    release.send(()).unwrap();
    first.await.unwrap();
    for q in queued {
        q.await.unwrap();
    }
    // Room again once the queue drained.
    engine.submit(vec![input], true).unwrap().await.unwrap();
}

#[tokio::test]
async fn work_of_callers_who_left_is_never_computed() {
    let (_d, m) = tiny_model();
    let input = ids(&m, "hello");
    let (gate, entered, release) = gated();
    let engine = EmbeddingEngine::start("tiny", m, EngineConfig::default(), gate.clone());
    let first = engine.submit(vec![input.clone()], true).unwrap();
    entered.recv().unwrap();
    for _ in 0..10 {
        // Submitted, then dropped: the client disconnected while queued.
        drop(
            engine
                .submit(vec![input.clone(), input.clone()], true)
                .unwrap(),
        );
    }
    release.send(()).unwrap();
    first.await.unwrap();
    engine.submit(vec![input], true).unwrap().await.unwrap();
    assert_eq!(gate.cancelled.load(Ordering::SeqCst), 10);
    assert_eq!(
        gate.computed_sequences.load(Ordering::SeqCst),
        2,
        "only the two live requests ran"
    );
}

#[tokio::test]
async fn shutdown_finishes_queued_work_then_refuses() {
    let (_d, m) = tiny_model();
    let input = ids(&m, "hello");
    let mut engine =
        EmbeddingEngine::start("tiny", m, EngineConfig::default(), Arc::new(NoopObserver));
    let pending = engine.submit(vec![input.clone()], true).unwrap();
    engine.shutdown();
    assert_eq!(pending.await.unwrap().len(), 1);
    assert!(matches!(
        engine.submit(vec![input], true),
        Err(EngineError::Stopped(_))
    ));
}
