"""Playground latency and throughput, measured the way a user meets them: through the served app.

Starts `omni-lab playground` (the toy twin by default) in a subprocess on a free localhost port, then with
gradio_client:
1. time from submit to the first streamed answer token, for an image question and for a video + audio question
   (median, p90 and spread over `--trials` requests, after one warm-up each); the server's own figure (request start to
   first token, from the stats) is printed beside it, so queue and transport overhead is visible;
2. requests per minute sustained by `--clients` concurrent clients (10 by default), each cycling through the shipped
   examples for `--requests-per-client` requests; every answer is checked against the example's known answer;
3. compare mode (`/compare`, the default pair EVS 0.7 against RandomDrop at EVS's budget, on the video + audio
   example): time from submit to arm A's first streamed token and to arm B's first streamed token (B runs after A
   has finished), median over `--trials`, beside the server's own per-arm figure (each arm's start to its first
   token: encoders + reducer + prefill + the first decode step).

    python benchmarks/bench_playground.py [--model toy] [--trials 10] [--clients 10] [--requests-per-client 3]
    python benchmarks/bench_playground.py --only compare --trials 5       # compare mode alone

The machine's load average is printed first: on a shared 2-core box the figures move with it.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from contextlib import closing


def free_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(model: str, port: int, timeout_s: float = 300.0) -> subprocess.Popen:
    """`omni-lab playground` in a subprocess; returns once the page answers."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    command = [sys.executable, "-m", "omni_lab.cli", "playground", "--model", model, "--port", str(port)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the playground exited with {process.returncode}: {process.stderr.read()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
                if response.status == 200:
                    return process
        except OSError:
            time.sleep(0.5)
    process.kill()
    raise RuntimeError(f"the playground did not answer within {timeout_s:.0f} s")


def arguments(example):
    from gradio_client import handle_file

    files = {kind: handle_file(path) for kind, path in example.media().items()}
    return [example.question, files.get("image"), files.get("video"), files.get("audio"), "model", 0.5, 16]


def first_token_latency(client, example) -> tuple[float, float, str]:
    """(seconds from submit to the first non-empty streamed answer, the server's first_token_s, final answer)."""
    started = time.perf_counter()
    job = client.submit(*arguments(example), api_name="/ask")
    first = None
    for output in job:
        if isinstance(output[0], str) and output[0]:
            first = time.perf_counter() - started
            break
    answer, stats = job.result()[:2]
    if first is None:  # the whole answer arrived in one message
        first = time.perf_counter() - started
    return first, stats["timings"]["first_token_s"], answer


def measure_first_token(url: str, example, trials: int) -> dict:
    from gradio_client import Client

    client = Client(url, verbose=False)
    first_token_latency(client, example)  # warm-up: upload caches, first-call costs
    client_s, server_s = [], []
    for _ in range(trials):
        seconds, server, answer = first_token_latency(client, example)
        if answer != example.answer:
            raise AssertionError(f"{example.name}: answered {answer!r}, known answer {example.answer!r}")
        client_s.append(seconds)
        server_s.append(server)
    return {"client": client_s, "server": server_s}


def compare_first_tokens(client, example) -> tuple[float, float, list[float], tuple[str, str]]:
    """(seconds from submit to arm A's first streamed token, to arm B's first, the server's per-arm first_token_s,
    the final answers). A skipped output reaches the client as {"__type__": "update"}, a streamed one as text."""
    from gradio_client import handle_file

    files = {kind: handle_file(path) for kind, path in example.media().items()}
    arguments = [example.question, files.get("image"), files.get("video"), files.get("audio")]
    started = time.perf_counter()
    job = client.submit(*arguments, "evs", 0.7, "random-matched", 0.7, 16, api_name="/compare")
    first = [None, None]
    for output in job:
        for arm in (0, 1):
            if first[arm] is None and isinstance(output[arm], str) and output[arm]:
                first[arm] = time.perf_counter() - started
    answer_a, answer_b, _, comparison, *_ = job.result()
    ended = time.perf_counter() - started
    server = [arm["timings"]["first_token_s"] for arm in comparison["arms"]]
    return first[0] or ended, first[1] or ended, server, (answer_a, answer_b)


def measure_compare(url: str, example, trials: int) -> dict:
    from gradio_client import Client

    client = Client(url, verbose=False)
    compare_first_tokens(client, example)  # warm-up
    times = {"a": [], "b": [], "server_a": [], "server_b": []}
    for _ in range(trials):
        a, b, server, answers = compare_first_tokens(client, example)
        if answers != (example.answer, example.answer):
            raise AssertionError(f"{example.name}: answered {answers}, known answer {example.answer!r}")
        times["a"].append(a)
        times["b"].append(b)
        times["server_a"].append(server[0])
        times["server_b"].append(server[1])
    return times


def measure_throughput(url: str, examples, clients: int, per_client: int) -> tuple[float, int, float]:
    """(requests per minute, requests completed, wall seconds) with `clients` concurrent gradio_client clients."""
    from gradio_client import Client

    connected = [Client(url, verbose=False) for _ in range(clients)]
    errors: list[str] = []
    done = [0]
    lock = threading.Lock()

    def work(index: int) -> None:
        for turn in range(per_client):
            example = examples[(index + turn * clients) % len(examples)]
            try:
                answer = connected[index].predict(*arguments(example), api_name="/ask")[0]
            except Exception as error:  # reported with the example below
                errors.append(f"{example.name}: {type(error).__name__}: {error}")
                continue
            if answer != example.answer:
                errors.append(f"{example.name}: answered {answer!r}, known answer {example.answer!r}")
            with lock:
                done[0] += 1

    threads = [threading.Thread(target=work, args=(index,)) for index in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise AssertionError("; ".join(errors))
    return done[0] / elapsed * 60.0, done[0], elapsed


def describe(values: list[float]) -> str:
    values = sorted(values)
    p90 = statistics.quantiles(values, n=10)[-1] if len(values) > 1 else values[0]
    return (
        f"median {statistics.median(values):.3f} s, p90 {p90:.3f} s (min {values[0]:.3f}, max {values[-1]:.3f}, "
        f"n={len(values)})"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="toy")
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--requests-per-client", type=int, default=3)
    parser.add_argument("--only", choices=("ask", "throughput", "compare"), help="run one part alone")
    args = parser.parse_args()
    parts = {args.only} if args.only else {"ask", "throughput", "compare"}

    from omni_lab.playground.examples import load_examples

    examples = load_examples()
    by_name = {example.name: example for example in examples}
    print(f"load average (1, 5, 15 min): {os.getloadavg()}; CPUs: {os.cpu_count()}")
    port = free_port()
    server = start_server(args.model, port)
    url = f"http://127.0.0.1:{port}/"
    try:
        for name in ("image-colour", "omni-count-and-direction") if "ask" in parts else ():
            times = measure_first_token(url, by_name[name], args.trials)
            print(f"first token, {name:<26} client {describe(times['client'])}")
            print(f"{'':<39} server {describe(times['server'])}")
        if "throughput" in parts:
            rate, completed, elapsed = measure_throughput(url, examples, args.clients, args.requests_per_client)
            print(
                f"throughput: {rate:.1f} requests/min with {args.clients} concurrent clients "
                f"({completed} requests in {elapsed:.1f} s, every answer = the known answer)"
            )
        if "compare" in parts:
            times = measure_compare(url, by_name["omni-count-and-direction"], args.trials)
            print("compare mode, omni-count-and-direction, EVS 0.7 against RandomDrop at its budget:")
            print(f"  first token of arm A, from submit (client) {describe(times['a'])}")
            print(f"  first token of arm B, from submit (client) {describe(times['b'])}")
            print(f"  arm A's own start to its first token (server) {describe(times['server_a'])}")
            print(f"  arm B's own start to its first token (server) {describe(times['server_b'])}")
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(f"load average after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
