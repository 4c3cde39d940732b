"""cpt.synth with a real model: SmolLM2-135M-Instruct on CPU, in process and behind a real HTTP
server on 127.0.0.1 (cpt.synth.server) reached through the `openai` client.

Generation is kept tiny (greedy, 16-32 new tokens, one to four prompts). Servers run as
subprocesses with an idle timeout, so they stop by themselves even if a test dies.
"""
from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from cpt.assets import leetcode_problems_dir, smollm2_hf_dir
from cpt.synth import disciplines, parse, pipeline, prompts, tasks
from cpt.synth.code_tasks import read_problem, read_seed_pairs
from cpt.synth.filters import FilterConfig
from cpt.synth.generators import ChatRequest, SamplingParams
from cpt.synth.generators.decode_loop import DecodeLoop
from cpt.synth.generators.openai_backend import OpenAIGenerator
from cpt.synth.generators.transformers_backend import TransformersGenerator
from cpt.synth.journal import Journal
from cpt.synth.snippets import Snippet

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
SNIPPET = ("Newton's second law states that the net force acting on an object equals the product of its mass "
           "and its acceleration. A force of one newton gives a mass of one kilogram an acceleration of one "
           "metre per second squared.")
GREEDY = SamplingParams(max_new_tokens=8, temperature=0.0)


class Server:
    """`python -m cpt.synth.server` in a subprocess; the port comes back through a file."""

    def __init__(self, tmp: Path, faults: str = "", idle_timeout: float = 120.0, batch_wait_ms: int = 20) -> None:
        self.port_file = tmp / "port"
        self.log = open(tmp / "server.log", "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cpt.synth.server", "--model", str(smollm2_hf_dir()), "--served-name", "smol",
             "--port", "0", "--port-file", str(self.port_file), "--faults", faults,
             "--idle-timeout", str(idle_timeout), "--batch-size", "4", "--threads", "1",
             "--batch-wait-ms", str(batch_wait_ms)],
            cwd=REPO, stdout=self.log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 240.0) -> str:
        deadline = time.monotonic() + timeout
        while not self.port_file.exists():
            assert self.proc.poll() is None, f"server exited early: {self.port_file.with_name('server.log').read_text()}"
            assert time.monotonic() < deadline, "server did not start in time"
            time.sleep(0.2)
        return f"http://127.0.0.1:{self.port_file.read_text()}/v1"

    def health(self) -> dict:
        with urllib.request.urlopen(self.wait_ready().replace("/v1", "/health"), timeout=10) as r:
            return json.loads(r.read())

    @contextlib.contextmanager
    def kept_alive(self):
        """Ping /health every second, so a slow client start never meets an idle-stopped server."""
        stop = threading.Event()

        def ping() -> None:
            while not stop.wait(1.0):
                self.health()

        thread = threading.Thread(target=ping, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=15)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
        self.log.close()


@pytest.fixture(scope="module")
def flaky_server(tmp_path_factory):
    """A server whose first requests fail (503, 500), then stall (40 s)."""
    server = Server(tmp_path_factory.mktemp("server_a"), faults="503,500,delay:40", batch_wait_ms=1000)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def local():
    return TransformersGenerator(str(smollm2_hf_dir()), batch_size=4, num_threads=1)


def _physics_tasks(n: int) -> list[tasks.Task]:
    snips = [Snippet(f"doc{i}#0", f"doc{i}", SNIPPET) for i in range(n)]
    tpl = {"physics": prompts.load_template("physics")}
    return tasks.science_tasks(snips, [disciplines.get("physics")] * n, tpl, samples=1, n_pairs=1)


def test_real_qa_from_a_real_snippet(local, tmp_path):
    work = _physics_tasks(1)
    params = SamplingParams(max_new_tokens=32, temperature=0.0)
    summary = pipeline.run(work, local, tmp_path / "qa.jsonl", params, FilterConfig(min_grounding=0.3),
                           progress_every_s=0)
    raw = next(iter(Journal(pipeline.journal_path(tmp_path / "qa.jsonl")).records.values()))
    assert raw["generator"].startswith("transformers:") and 0 < raw["n_tokens"] <= 32
    pairs = parse.parse_qa(raw["text"])
    assert pairs and pairs[0].question.endswith("?"), raw["text"]
    rejected = sum(summary["rejected"].values())
    assert summary["pairs_kept"] + rejected == len(pairs) and summary["missing"] == 0
    for line in (tmp_path / "qa.jsonl").read_text().splitlines():
        rec = json.loads(line)
        assert rec["text"].startswith("Question: ") and rec["discipline"] == "physics"
        assert rec["source_doc_id"] == "doc0" and rec["prompt_version"] == "physics.v2" and rec["corrupt"] is False


def test_prefill_ends_the_prompt_and_the_completion_starts_with_it(local):
    (task,) = _physics_tasks(1)
    req = ChatRequest(task.key, task.messages, task.seed)
    assert req.prefill == "Question:" and task.messages[-1] == {"role": "assistant", "content": "Question:"}
    prompt = local.prompt_text(req)
    assert prompt.endswith("<|im_start|>assistant\nQuestion:"), prompt[-80:]  # continued, not a new turn
    plain = local.prompt_text(ChatRequest("plain", task.messages[:-1]))
    assert plain.endswith("<|im_start|>assistant\n") and prompt == plain + "Question:"
    (got,) = local.generate_batch([req], SamplingParams(max_new_tokens=24, temperature=0.0))
    assert got.text.startswith("Question:") and not got.text.startswith("Question:Question"), got.text
    pairs = parse.parse_qa(got.text)  # the parser reads the prefilled marker as the first question's
    assert pairs and pairs[0].question and pairs[0].question in got.text[len("Question:"):], got.text


@pytest.mark.parametrize("decode", ["generate", "prune"])
def test_requests_are_generated_in_batches_of_similar_prompt_length(local, monkeypatch, decode):
    monkeypatch.setattr(local, "batch_size", 2)
    monkeypatch.setattr(local, "decode", decode)
    short, long_ = SNIPPET[:120], SNIPPET * 3
    reqs = [ChatRequest(f"r{i}", [{"role": "user", "content": f"Summarize: {long_ if i % 2 else short}"}], seed=i)
            for i in range(4)]
    batches = []  # per batch (or loop admission), whether each prompt is a long one
    if decode == "generate":
        real = local._generate
        monkeypatch.setattr(local, "_generate", lambda b, p, params: batches.append(
            [r.key in ("r1", "r3") for r in b]) or real(b, p, params))
    else:
        real_prefill = DecodeLoop._prefill
        monkeypatch.setattr(DecodeLoop, "_prefill", lambda self, rows: batches.append(
            [len(r.prompt_ids) > 100 for r in rows]) or real_prefill(self, rows))
    done = list(local.generate(reqs, SamplingParams(max_new_tokens=2, temperature=0.0)))
    assert batches == [[False, False], [True, True]]  # the short prompts together, then the long ones
    assert sorted(c.key for c in done) == ["r0", "r1", "r2", "r3"] and all(c.n_tokens > 0 for c in done)
    monkeypatch.setattr(local, "sort_by_length", False)
    batches.clear()
    list(local.generate(reqs, SamplingParams(max_new_tokens=1, temperature=0.0)))
    assert batches == [[False, True], [False, True]]  # in the order given


def test_openai_backend_sends_the_prefill_only_to_a_server_that_continues_it(tmp_path, local, capsys):
    server = Server(tmp_path, idle_timeout=60.0)
    try:
        url = server.wait_ready()
        (task,) = _physics_tasks(1)
        req = ChatRequest(task.key, task.messages, task.seed)
        params = SamplingParams(max_new_tokens=12, temperature=0.0)
        (continued,) = OpenAIGenerator("smol", url, max_retries=0, continue_final_message=True).generate([req], params)
        (expected,) = local.generate_batch([req], params)  # the same model in process, prefilled
        assert continued.error is None and continued.text == expected.text and continued.text.startswith("Question:")
        (plain,) = OpenAIGenerator("smol", url, max_retries=0).generate([req], params)
        (unprefilled,) = local.generate_batch([ChatRequest(req.key, req.messages[:-1], req.seed)], params)
        assert plain.error is None and plain.text == unprefilled.text  # the request as it was before prefills
        assert "prefill 'Question:' not sent" in capsys.readouterr().err
        body = json.dumps({"model": "smol", "messages": req.messages, "max_tokens": 2}).encode()
        with pytest.raises(urllib.error.HTTPError, match="400"):  # a server that does not continue says so
            urllib.request.urlopen(urllib.request.Request(f"{url}/chat/completions", body,
                                                          {"Content-Type": "application/json"}), timeout=60)
    finally:
        server.stop()


def test_code_qa_by_in_context_learning(local, tmp_path):
    problem = read_problem(leetcode_problems_dir() / "climbing_stairs.json")
    work = tasks.code_tasks([problem], prompts.load_template("code"), read_seed_pairs(prompts.code_seed_path()), k=1)
    assert len(work[0].messages) == 4  # system, one example exchange, the problem
    summary = pipeline.run(work, local, tmp_path / "code.jsonl", SamplingParams(max_new_tokens=16, temperature=0.0),
                           FilterConfig(), progress_every_s=0)
    raw = next(iter(Journal(pipeline.journal_path(tmp_path / "code.jsonl")).records.values()))
    assert raw["kind"] == "code" and raw["text"].strip() and raw["context"] == problem.text
    assert summary["pairs_kept"] + sum(summary["rejected"].values()) == 1  # kept or rejected, never lost
    out = [json.loads(x) for x in (tmp_path / "code.jsonl").read_text().splitlines()]
    assert all(r["question"] == problem.text and r["discipline"] == "code" for r in out)


def test_openai_backend_retries_errors_and_timeouts_against_a_real_server(flaky_server, local):
    server = flaky_server
    url = server.wait_ready()
    req = ChatRequest("k", [{"role": "user", "content": "Name the planet closest to the Sun."}], seed=3)
    gen = OpenAIGenerator("smol", url, concurrency=1, timeout_s=10.0, max_retries=3, backoff_s=0.05)
    start = time.monotonic()
    (got,) = list(gen.generate([req], GREEDY))
    elapsed = time.monotonic() - start
    assert got.error is None and got.attempts == 4 and gen.retries == 3  # 503, 500, timeout, then success
    assert elapsed >= 10.0  # the stalled attempt was abandoned at the client's timeout, not waited out
    (expected,) = local.generate_batch([req], GREEDY)  # the same model, in process: not canned text
    assert got.text == expected.text and got.n_tokens == expected.n_tokens > 0
    assert server.health()["chat_requests"] == 4
    # Concurrent requests are gathered into one batch by the server (it waits up to 1 s for company).
    many = [ChatRequest(str(i), [{"role": "user", "content": f"Count to {i + 2}."}], seed=i) for i in range(3)]
    done = list(OpenAIGenerator("smol", url, concurrency=3, timeout_s=120.0, max_retries=0).generate(many, GREEDY))
    assert sorted(c.key for c in done if c.error is None and c.n_tokens > 0) == ["0", "1", "2"]
    health = server.health()
    assert health["chat_requests"] == 7 and health["max_in_flight"] >= 2 and health["max_batch"] >= 2


def test_failed_requests_are_counted_then_generated_by_the_next_run(tmp_path):
    server = Server(tmp_path, faults="503,503", idle_timeout=3.0)  # its first two requests fail
    try:
        server.wait_ready()
        with server.kept_alive():
            _failures_then_resume(server, tmp_path)
        # Left alone, the server stops by itself after its idle timeout.
        assert server.proc.wait(timeout=60) == 0
    finally:
        server.stop()


def _failures_then_resume(server: Server, tmp_path: Path) -> None:
    url = server.wait_ready()
    work = _physics_tasks(2)
    out = tmp_path / "qa.jsonl"
    no_retry = OpenAIGenerator("smol", url, concurrency=1, timeout_s=120.0, max_retries=0)
    first = pipeline.run(work, no_retry, out, GREEDY, FilterConfig(), progress_every_s=0)
    assert first["generation_failed"] == first["rejected"]["generation_failed"] == 2 and first["missing"] == 2
    assert server.health()["chat_requests"] == 2  # both reached the server and were refused there
    assert not out.read_text() and not Journal(pipeline.journal_path(out)).records
    cli = subprocess.run(
        [sys.executable, str(REPO / "tools" / "synthesize_qa.py"), "--input", str(_docs(tmp_path, 2)),
         "--output", str(out), "--discipline", "physics", "--pairs-per-snippet", "1", "--min-snippet-chars", "50",
         "--generator", "openai", "--base-url", url, "--model", "smol", "--concurrency", "1",
         "--max-new-tokens", "8", "--temperature", "0"],
        capture_output=True, text=True, timeout=300)
    assert cli.returncode == 0, cli.stderr
    summary = json.loads(pipeline.summary_path(out).read_text())
    assert summary["tasks"] == 2 and summary["generated_now"] == 2 and summary["missing"] == 0
    assert summary["generator"] == "openai:smol"
    health = server.health()
    # Two requests were always waiting, yet never more than --concurrency 1 reached the server.
    assert health["chat_requests"] == 4 and health["max_in_flight"] == 1


def _docs(tmp: Path, n: int) -> Path:
    path = tmp / "docs.jsonl"
    path.write_text("".join(json.dumps({"id": f"doc{i}", "text": SNIPPET}) + "\n" for i in range(n)))
    return path
