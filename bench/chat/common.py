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


def add_sampling_args(ap):
    """--temperature and --top-p, the same for every engine (run.py passes them on)."""
    ap.add_argument("--temperature", type=float, default=0.0,
                    help="sampling temperature; 0 (the default) decodes greedily, as before these options")
    ap.add_argument("--top-p", type=float, default=1.0,
                    help="nucleus sampling: keep the fewest tokens whose probability, after the "
                         "temperature, sums to this (default 1.0: all); only with --temperature > 0")


def check_sampling(ap, a):
    """Rejects settings some engine would refuse or read differently."""
    if not 0.0 <= a.temperature <= 2.0:  # kiln's API accepts [0, 2]
        ap.error(f"--temperature must be between 0 and 2, got {a.temperature}")
    if not 0.0 < a.top_p <= 1.0:
        ap.error(f"--top-p must be in (0, 1], got {a.top_p}")
    if a.temperature == 0.0 and a.top_p != 1.0:
        ap.error("--top-p applies only when sampling: give --temperature > 0 too")


def sampling_label(temperature, top_p):
    """How the run decodes, for results: "greedy" or "temperature T, top-p P"."""
    return "greedy" if temperature == 0 else f"temperature {temperature:g}, top-p {top_p:g}"


def sampling_argv(temperature, top_p):
    """The engine scripts' options for these settings; none when greedy (their default)."""
    return [] if temperature == 0 else ["--temperature", str(temperature), "--top-p", str(top_p)]


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
