#!/usr/bin/env bash
# Runs fuzz targets one after another, one process each, for SECONDS seconds (default 600),
# logging to LOG_DIR (default fuzz/logs). Usage: fuzz/run.sh [TARGET...]
set -u
cd "$(dirname "$0")"
seconds=${SECONDS_PER_TARGET:-600}
logs=${LOG_DIR:-logs}
mkdir -p "$logs"
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(gguf safetensors pickle tokenizer)
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    echo "== $t: $(date -u +%FT%TZ)" >"$logs/$t.log"
    cargo +nightly fuzz run "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$seconds" -rss_limit_mb=4096 -timeout=10 \
        -print_final_stats=1 -artifact_prefix="artifacts/$t/" >>"$logs/$t.log" 2>&1
    echo "== $t exit $? $(date -u +%FT%TZ)" >>"$logs/$t.log"
done
