"""What every engine script of the chat benchmark shares: the workload and the output."""
import json
import os
import sys

NEW_TOKENS = 128          # decode length for the single-stream rate
STREAM_TOKENS = 64        # tokens per stream in the aggregate runs
STREAMS = (1, 4, 8, 16)
RUNS = 3                  # medians of this many runs after a warm-up
if os.environ.get("KILN_BENCH_QUICK"):  # run.py --quick: checks the harness, measures nothing
    NEW_TOKENS, STREAM_TOKENS, STREAMS, RUNS = 16, 8, (1, 4), 1

PARAGRAPH = (
    "The kiln was fired for three days and three nights, and the potters took turns feeding "
    "the firebox with split pine while the temperature climbed past twelve hundred degrees. "
)


def short_prompt(i):
    """About 20 tokens; a different opening each run, so no engine can reuse a cached prefix."""
    return f"Story {i}: the history of the printing press begins in a small workshop where a"


def long_prompt(i):
    """About 500 tokens, again with a distinct opening."""
    return f"Chapter {i}. " + PARAGRAPH * 15 + "Then"


def decode_prompt(i):
    return f"Essay {i}: The history of the printing press begins"


def emit(result):
    """Prints the engine's result as the last line of stdout, for run.py."""
    sys.stdout.write("RESULT " + json.dumps(result) + "\n")
    sys.stdout.flush()


def rss_mib(pid="self"):
    """(current, peak) resident memory of a process in MiB."""
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            fields[k] = v.strip()
    kib = lambda k: int(fields[k].split()[0]) / 1024
    return kib("VmRSS"), kib("VmHWM")
