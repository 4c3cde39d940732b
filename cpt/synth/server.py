"""A minimal OpenAI-compatible chat server around the transformers backend.

For local testing of `--generator openai` and of any client of the OpenAI API, without vLLM or a
GPU: `python -m cpt.synth.server --model DIR --port 8000`, then point the client at
`http://127.0.0.1:8000/v1`. It serves `POST /v1/chat/completions` (non-streaming, n=1),
`GET /v1/models` and `GET /health` (which also reports how many chat requests came, the most that
were in flight at once and the largest batch generated, so a client's concurrency can be checked).
Concurrent requests are gathered into batches (up to `--batch-size`, waiting at most
`--batch-wait-ms` for company) and generated together. Like vLLM's server it continues a final
assistant message when the body says `continue_final_message: true` (a prefill; the answer's
content is the continuation only) and refuses a final assistant message without it.

Two things exist for tests of clients: `--faults` makes the first requests fail (`503`) or stall
(`delay:SECONDS`) in the order given, and `--idle-timeout` stops the server by itself when no
request came for that long, so a test that dies cannot leave it running.
"""
from __future__ import annotations

import argparse
import json
import queue
import sys
import threading
import time
import uuid
from concurrent.futures import Future
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cpt.io import write_text_atomic
from cpt.synth.generators.base import ChatRequest, SamplingParams


def parse_faults(spec: str) -> list[tuple[str, float]]:
    """`503,500,delay:2.5` -> [("status", 503), ("status", 500), ("delay", 2.5)]."""
    faults: list[tuple[str, float]] = []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        if item.startswith("delay:"):
            faults.append(("delay", float(item[6:])))
        elif item.isdigit() and 400 <= int(item) <= 599:
            faults.append(("status", int(item)))
        else:
            raise ValueError(f"--faults item {item!r}: expected an HTTP status 400-599 or delay:SECONDS")
    return faults


class Batcher:
    """Gathers queued requests into batches for one generator thread (the model is not thread-safe)."""

    def __init__(self, generator, batch_size: int, wait_s: float) -> None:
        self.generator = generator
        self.batch_size = batch_size
        self.wait_s = wait_s
        self.queue: queue.Queue = queue.Queue()
        self.stopped = threading.Event()
        self.batches = 0
        self.max_batch = 0
        self.thread = threading.Thread(target=self._loop, name="synth-batcher", daemon=True)
        self.thread.start()

    def submit(self, req: ChatRequest, params: SamplingParams) -> Future:
        fut: Future = Future()
        self.queue.put((req, params, fut))
        return fut

    def _loop(self) -> None:
        while not self.stopped.is_set():
            try:
                first = self.queue.get(timeout=0.1)
            except queue.Empty:
                continue
            items = [first]
            deadline = time.monotonic() + self.wait_s
            while len(items) < self.batch_size:
                try:
                    items.append(self.queue.get(timeout=max(0.0, deadline - time.monotonic())))
                except queue.Empty:
                    break
            groups: dict[SamplingParams, list] = {}
            for item in items:
                groups.setdefault(item[1], []).append(item)
            for params, group in groups.items():
                self.batches += 1
                self.max_batch = max(self.max_batch, len(group))
                try:
                    done = self.generator.generate_batch([g[0] for g in group], params)
                except Exception as exc:  # the error goes back to each waiting client as a 500
                    for g in group:
                        g[2].set_exception(exc)
                    continue
                for g, completion in zip(group, done):
                    g[2].set_result(completion)


class _State:
    def __init__(self, batcher: Batcher, model_name: str, faults: list[tuple[str, float]]) -> None:
        self.batcher = batcher
        self.model_name = model_name
        self.faults = faults
        self.lock = threading.Lock()
        self.n_chat = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.last_activity = time.monotonic()

    def enter(self) -> None:
        with self.lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def leave(self) -> None:
        with self.lock:
            self.in_flight -= 1
            self.last_activity = time.monotonic()

    def next_fault(self) -> tuple[str, float] | None:
        with self.lock:
            self.n_chat += 1
            self.last_activity = time.monotonic()
            return self.faults[self.n_chat - 1] if self.n_chat <= len(self.faults) else None


class _Handler(BaseHTTPRequestHandler):
    """HTTP plumbing only: the routes' answers come from `_get_route` and `_chat`."""

    protocol_version = "HTTP/1.1"
    state: _State  # set on the subclass `_make_handler` builds

    def log_message(self, fmt: str, *args) -> None:  # quiet; errors still reach the client
        pass

    def _send(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        try:
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up (its timeout); nothing to tell it

    def do_GET(self) -> None:
        self.state.last_activity = time.monotonic()
        self._send(*_get_route(self.state, self.path.rstrip("/")))

    def do_POST(self) -> None:
        self.state.enter()
        try:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.path.rstrip("/") != "/v1/chat/completions":
                self._send(*_error(404, f"no route {self.path}", "not_found"))
            else:
                self._send(*_chat(self.state, raw))
        finally:
            self.state.leave()


def _make_handler(state: _State) -> type[_Handler]:
    return type("Handler", (_Handler,), {"state": state})


def _error(status: int, message: str, kind: str = "invalid_request_error") -> tuple[int, dict]:
    return status, {"error": {"message": message, "type": kind, "code": status}}


def _get_route(state: _State, path: str) -> tuple[int, dict]:
    if path in ("/health", "/v1/health"):
        return 200, {"status": "ok", "chat_requests": state.n_chat, "max_in_flight": state.max_in_flight,
                     "batches": state.batcher.batches, "max_batch": state.batcher.max_batch}
    if path == "/v1/models":
        return 200, {"object": "list", "data": [{"id": state.model_name, "object": "model", "owned_by": "cpt"}]}
    return _error(404, f"no route {path}", "not_found")


def _chat(state: _State, raw: bytes) -> tuple[int, dict]:
    """One chat completion: injected fault, validation, generation (batched), the response body."""
    fault = state.next_fault()
    if fault and fault[0] == "status":
        return _error(int(fault[1]), f"injected failure ({int(fault[1])})", "server_error")
    if fault and fault[0] == "delay":
        time.sleep(fault[1])
    try:
        req, params = _parse_request(raw)
    except ValueError as exc:
        return _error(400, str(exc))
    try:
        completion = state.batcher.submit(req, params).result()
    except Exception as exc:
        return _error(500, f"generation failed: {exc}", "server_error")
    state.last_activity = time.monotonic()
    prompt_tokens = completion.extra.get("prompt_tokens", 0)
    return 200, {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": state.model_name,
        "choices": [{"index": 0, "finish_reason": completion.extra.get("finish_reason", "stop"),
                     "message": {"role": "assistant", "content": completion.text[len(req.prefill):]}}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion.n_tokens,
                  "total_tokens": prompt_tokens + completion.n_tokens},
    }


def _parse_request(raw: bytes) -> tuple[ChatRequest, SamplingParams]:
    """Validate a chat-completions body; `ValueError` names the offending field."""
    try:
        body = json.loads(raw or b"{}")
    except json.JSONDecodeError as exc:
        raise ValueError(f"body is not JSON: {exc.msg}") from None
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(
            isinstance(m, dict) and isinstance(m.get("content"), str) and m.get("role") for m in messages):
        raise ValueError("'messages' must be a non-empty list of {role, content} objects")
    if body.get("stream"):
        raise ValueError("'stream': true is not supported by this server")
    if body.get("n", 1) != 1:
        raise ValueError("'n' must be 1")
    max_tokens = body.get("max_tokens") or body.get("max_completion_tokens") or 256
    temperature = body.get("temperature")
    top_p = body.get("top_p")
    params = SamplingParams(max_new_tokens=int(max_tokens),
                            temperature=1.0 if temperature is None else float(temperature),
                            top_p=1.0 if top_p is None else float(top_p))
    if messages[-1]["role"] == "assistant" and not body.get("continue_final_message"):
        raise ValueError("a final assistant message is continued only with 'continue_final_message': true")
    seed = body.get("seed")
    return ChatRequest("", [{"role": m["role"], "content": m["content"]} for m in messages],
                       int(seed) if seed is not None else 0), params


def serve(generator, host: str = "127.0.0.1", port: int = 0, model_name: str = "local",
          faults: list[tuple[str, float]] | None = None, idle_timeout_s: float | None = None,
          batch_size: int = 8, batch_wait_s: float = 0.02, ready=None) -> None:
    """Serve until idle for `idle_timeout_s` (forever when None); `ready(port)` is called once bound."""
    batcher = Batcher(generator, batch_size, batch_wait_s)
    state = _State(batcher, model_name, list(faults or []))
    httpd = ThreadingHTTPServer((host, port), _make_handler(state))
    httpd.daemon_threads = True
    if idle_timeout_s is not None:
        def watchdog() -> None:
            while state.in_flight or time.monotonic() - state.last_activity < idle_timeout_s:
                time.sleep(min(0.5, idle_timeout_s))
            httpd.shutdown()
        threading.Thread(target=watchdog, name="synth-idle", daemon=True).start()
    if ready is not None:
        ready(httpd.server_address[1])
    try:
        httpd.serve_forever(poll_interval=0.2)
    finally:
        batcher.stopped.set()
        httpd.server_close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cpt.synth.server", description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="transformers model folder (default: SmolLM2-135M-Instruct from cpt.assets)")
    parser.add_argument("--served-name", default=None, help="model id clients send (default: the folder name)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port (see --port-file)")
    parser.add_argument("--port-file", type=Path, help="write the bound port here once listening")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads on CPU")
    parser.add_argument("--batch-wait-ms", type=float, default=20.0)
    parser.add_argument("--faults", default="", help="e.g. 503,503,delay:3 for the first three chat requests")
    parser.add_argument("--idle-timeout", type=float, default=None, help="stop after this many idle seconds")
    args = parser.parse_args(argv)
    from cpt.synth.generators.transformers_backend import TransformersGenerator

    model = args.model
    if model is None:
        from cpt.assets import smollm2_hf_dir

        model = str(smollm2_hf_dir())
    generator = TransformersGenerator(model, batch_size=args.batch_size, num_threads=args.threads)
    name = args.served_name or Path(model).name

    def ready(port: int) -> None:
        if args.port_file:
            write_text_atomic(args.port_file, str(port))
        print(f"serving {name} on http://{args.host}:{port}/v1", flush=True)

    serve(generator, args.host, args.port, name, parse_faults(args.faults), args.idle_timeout,
          args.batch_size, args.batch_wait_ms / 1000, ready)
    return 0


if __name__ == "__main__":
    sys.exit(main())
