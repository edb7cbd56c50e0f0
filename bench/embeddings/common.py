"""The FastAPI app shape shared by the Python baseline servers of the embeddings benchmark.

Both servers (python_server.py: sentence-transformers; onnx_server.py: ONNX Runtime) expose
the same HTTP surface kiln does:

    GET  /health         -> 200 {"status": "ok"}
    POST /v1/embeddings  -> OpenAI embeddings schema

Each server passes an `embed(texts) -> (float32 array [n, dim], prompt_tokens)` function.
The endpoint is a plain `def` (FastAPI runs it in its thread pool), the idiomatic way to
serve blocking model code; one uvicorn worker. Responses go through JSONResponse directly
(skipping FastAPI's slow jsonable_encoder pass over thousands of floats), and the access
log is off, so the baselines are not handicapped by avoidable Python overhead.
"""
from __future__ import annotations

import argparse
import threading
from typing import Callable, List, Optional, Tuple, Union

import numpy as np
from fastapi import FastAPI, HTTPException
from fastapi.responses import JSONResponse
from pydantic import BaseModel

EmbedFn = Callable[[List[str]], Tuple[np.ndarray, int]]


class EmbeddingsRequest(BaseModel):
    input: Union[str, List[str]]
    model: Optional[str] = None
    encoding_format: Optional[str] = None
    user: Optional[str] = None


def make_app(embed: EmbedFn, model_name: str, serialize: bool = False) -> FastAPI:
    app = FastAPI(title=f"embeddings baseline ({model_name})")
    if serialize:  # one inference at a time instead of one per thread-pool thread
        lock = threading.Lock()
        inner = embed

        def embed(texts):  # noqa: F811
            with lock:
                return inner(texts)

    @app.get("/health")
    def health() -> JSONResponse:
        return JSONResponse({"status": "ok"})

    @app.post("/v1/embeddings")
    def embeddings(req: EmbeddingsRequest) -> JSONResponse:
        texts = [req.input] if isinstance(req.input, str) else list(req.input)
        if not texts:
            raise HTTPException(status_code=400, detail="input must not be empty")
        if req.encoding_format not in (None, "float"):
            raise HTTPException(status_code=400, detail="only encoding_format=float is supported")
        vectors, tokens = embed(texts)
        data = [
            {"object": "embedding", "index": i, "embedding": v}
            for i, v in enumerate(vectors.astype(np.float32).tolist())
        ]
        return JSONResponse(
            {
                "object": "list",
                "data": data,
                "model": req.model or model_name,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    return app


def base_arg_parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--model", required=True, help="model directory (e.g. models/all-MiniLM-L6-v2)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--threads", type=int, default=2, help="intra-op threads of the inference engine")
    p.add_argument("--serialize", action="store_true",
                   help="run one inference at a time (a lock) instead of one per concurrent request")
    p.add_argument("--max-seq-length", type=int, default=256, help="truncation length in tokens")
    return p


def serve(app: FastAPI, host: str, port: int) -> None:
    import uvicorn

    uvicorn.run(app, host=host, port=port, workers=1, log_level="warning", access_log=False)
