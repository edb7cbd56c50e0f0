//! `kiln serve`: load the models and serve them until Ctrl-C or SIGTERM.

use crate::args::ServeArgs;
use crate::model_source::{resolve, ModelKind};
use anyhow::{Context, Result};
use kiln_core::{ChatModel, EmbedderOptions, SentenceEmbedder};
use kiln_engine::{EmbeddingEngine, EngineConfig, GenerationConfig, GenerationEngine};
use kiln_server::{AppState, Limits, ModelFiles, ModelRegistry};
use std::sync::Arc;
use std::time::Instant;

/// Runs `kiln serve`.
pub fn run(args: ServeArgs) -> Result<()> {
    let metrics = Arc::new(kiln_server::metrics::Metrics::new());
    let mut registry = ModelRegistry::new();
    let config = EngineConfig {
        max_batch_tokens: args.max_batch_tokens,
        max_batch_requests: args.max_batch_requests,
        max_queue: args.max_queue,
        release_memory_after: off_if_zero(args.release_memory_after),
    };
    let gen_config = GenerationConfig {
        max_sequences: args.max_sequences,
        max_kv_tokens: args.max_kv_tokens,
        max_queue: args.max_queue,
        prefix_cache_tokens: args.prefix_cache_tokens,
        prefix_cache_ttl: off_if_zero(args.prefix_cache_ttl),
        release_memory_after: off_if_zero(args.release_memory_after),
        ..GenerationConfig::default()
    };
    for spec in &args.models {
        let resolved = resolve(spec, &args.source)?;
        let start = Instant::now();
        if resolved.kind == ModelKind::Chat {
            let spinner = crate::progress::spinner(format!(
                "loading {} from {}",
                resolved.name,
                resolved.dir.display()
            ));
            let model = ChatModel::load(&resolved.dir)
                .with_context(|| format!("loading model `{}`", resolved.name))?;
            spinner.finish_and_clear();
            let c = model.model.config();
            tracing::info!(
                model = %resolved.name,
                arch = %c.arch,
                layers = c.layers,
                context = c.context_length,
                chat_template = model.has_chat_template(),
                seconds = start.elapsed().as_secs_f64(),
                "chat model loaded"
            );
            let engine = GenerationEngine::start(resolved.name.clone(), model, gen_config.clone());
            registry
                .add_generation(engine)
                .map_err(anyhow::Error::msg)?;
            registry.attach_files(&resolved.name, ModelFiles::single(&resolved.dir));
            continue;
        }
        let spinner = crate::progress::spinner(format!(
            "loading {} from {}",
            resolved.name,
            resolved.dir.display()
        ));
        let model = SentenceEmbedder::load(
            &resolved.dir,
            &EmbedderOptions {
                pooling: args.pooling,
            },
        )
        .with_context(|| format!("loading model `{}`", resolved.name))?;
        spinner.finish_and_clear();
        tracing::info!(
            model = %resolved.name,
            dimension = model.dimension(),
            max_tokens = model.max_tokens(),
            normalize = model.normalizes(),
            seconds = start.elapsed().as_secs_f64(),
            "model loaded"
        );
        let engine = EmbeddingEngine::start(
            resolved.name.clone(),
            model,
            config.clone(),
            metrics.clone(),
        );
        registry.add(engine).map_err(anyhow::Error::msg)?;
        registry.attach_files(&resolved.name, ModelFiles::embedding_dir(&resolved.dir));
    }
    // What loading freed (its scratch buffers) goes back to the OS before serving.
    kiln_kernels::memory::release_free_memory();
    let limits = Limits {
        max_body_bytes: args.max_body_bytes,
        max_inputs: args.max_inputs,
        max_prompt_tokens: args.max_prompt_tokens,
        max_completion_tokens: args.max_completion_tokens,
        request_timeout: off_if_zero(args.request_timeout),
    };
    let state = AppState::new(registry, metrics, limits);
    let ready = state.ready.clone();
    let closer = state.clone();
    let shutdown_timeout = args.shutdown_timeout;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("kiln-http")
        .build()?;
    runtime.block_on(async move {
        let auth = crate::serve_auth::open(&args.auth, state.metrics.clone()).await?;
        let addr = format!("{}:{}", args.host, args.port);
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        let local = listener.local_addr()?;
        tracing::info!(
            "listening on http://{local} (playground: http://{local}/, models: {})",
            state.models.names().join(", ")
        );
        let options = kiln_server::RouterOptions {
            wasm_dirs: wasm_dirs(args.wasm_dir.as_deref()),
        };
        let app = crate::serve_auth::wrap(kiln_server::router_with(state, options), auth.as_ref());
        // On SIGTERM or Ctrl-C: report not ready, stop accepting, let in-flight requests and
        // streams finish for up to --shutdown-timeout, then close what remains.
        let (began_tx, mut began) = tokio::sync::watch::channel(false);
        let signal = async move {
            shutdown_signal().await;
            ready.store(false, std::sync::atomic::Ordering::Relaxed);
            let _ = began_tx.send(true);
        };
        let deadline = async move {
            let _ = began.wait_for(|b| *b).await;
            tokio::time::sleep(shutdown_timeout).await;
        };
        let served = tokio::select! {
            r = axum::serve(listener, app).with_graceful_shutdown(signal) => r.context("serving HTTP"),
            _ = deadline => {
                tracing::warn!(
                    "shutdown timeout ({:.0} s) reached: closing the requests still open",
                    shutdown_timeout.as_secs_f64()
                );
                // Open streams end with a final error event and `[DONE]`; give them a moment
                // to be written before the connections close.
                closer.close_streams();
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                Ok(())
            }
        };
        crate::serve_auth::flush(auth.as_ref()).await;
        served
    })?;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}

/// Where `/wasm/` looks for the WebAssembly package: the `--wasm-dir` folder, or by default
/// `target/wasm-pkg` under the current directory, then `wasm-pkg` beside the binary's folder.
fn wasm_dirs(flag: Option<&std::path::Path>) -> Vec<std::path::PathBuf> {
    if let Some(dir) = flag {
        return vec![dir.to_path_buf()];
    }
    let mut dirs = vec![std::path::PathBuf::from("target/wasm-pkg")];
    if let Some(bin_dir) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|p| p.to_path_buf()))
    {
        if let Some(up) = bin_dir.parent() {
            dirs.push(up.join("wasm-pkg"));
        }
    }
    dirs
}

/// A duration flag where 0 means "off".
fn off_if_zero(d: std::time::Duration) -> Option<std::time::Duration> {
    (!d.is_zero()).then_some(d)
}
