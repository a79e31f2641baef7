"""The endpoint policy (`--model openai:URL[#MODEL]`) against real servers on 127.0.0.1.

`transformers serve` (the `serving` extra) serves the prepared SmolLM2-135M directory offline;
a tiny `http.server` stands in only where our own retry loop and request building are tested
(503/429 then success, a vLLM-style `owned_by`, the API key header).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from env.browser import Admissible, BrowserEnv, EnvConfig
from env.limits import BrowseLimits
from env.record import WROTE_NO_ANSWER, EpisodeRecord
from webagent.endpoint import (
    EndpointConfig,
    EndpointError,
    EndpointPolicy,
    admissible_grammar,
    admissible_regex,
    parse_spec,
)
from webagent.policy import Sampling
from webagent.rollout import RunConfig, Task, reanswer, run_episodes

FAST = EndpointConfig(backoff_seconds=0.01, max_backoff_seconds=0.05, max_retries=3)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------ spec, aid
@pytest.mark.parametrize(
    ("spec", "base", "model", "route"),
    [
        ("openai:http://127.0.0.1:8000/v1", "http://127.0.0.1:8000/v1", None, None),
        ("openai:http://h:8000/v1/#org/m", "http://h:8000/v1", "org/m", None),
        ("openai:https://h/v1/chat/completions#m", "https://h/v1", "m", "chat"),
        ("openai:http://h/v1/completions", "http://h/v1", None, "completions"),
    ],
)
def test_parse_spec(spec, base, model, route):
    parsed = parse_spec(spec)
    assert (parsed.base_url, parsed.model, parsed.route) == (base, model, route)


@pytest.mark.parametrize(
    "spec",
    [
        "openai:",
        "openai:127.0.0.1:8000",
        "openai:ftp://h/v1",
        "openai:http://u:p@h/v1",
        "openai:http://h:99999/v1",
        "openai:http://h/v1?x=1",
        "openai:http://h/v 1",
        "gemma3-270m",
    ],
)
def test_parse_spec_rejects(spec):
    with pytest.raises(ValueError):
        parse_spec(spec)


def test_admissible_regex_and_grammar_match_exactly_the_set():
    adm = Admissible(
        ('Quote: He said "hi" (1990) [1].', "Clicked on link 3", "Back", r"a\b|c*"),
        ("Search", "Find in page:"),
    )
    pattern = re.compile(admissible_regex(adm))
    for command in adm.commands:
        assert pattern.fullmatch(command)
    assert pattern.fullmatch("Search Mona Lisa painter")
    assert pattern.fullmatch("Find in page: Leonardo")
    for bad in ("Clicked on link 4", "Backx", "Quote: He said", "Search x\nBack", "abc"):
        assert not pattern.fullmatch(bad), bad
    grammar = admissible_grammar(adm)
    assert grammar.startswith("root ::= ")
    assert r'"Quote: He said \"hi\" (1990) [1]."' in grammar
    assert r'"a\\b|c*"' in grammar
    assert r'"Search" [^\n]*' in grammar


# --------------------------------------------------------------- a tiny server for our loop
class _Scripted(BaseHTTPRequestHandler):
    """Answers POSTs from a script of (status, body) pairs; records every request."""

    script: list[tuple[int, dict]] = []
    seen: list[tuple[str, dict, dict]] = []
    owned_by = "someone"

    def log_message(self, *args):  # quiet
        pass

    def _send(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if status in (429, 503):
            self.send_header("Retry-After", "0")
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self.seen.append(("GET " + self.path, dict(self.headers), {}))
        self._send(200, {"object": "list", "data": [{"id": "m", "owned_by": self.owned_by}]})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.seen.append(("POST " + self.path, dict(self.headers), body))
        status, answer = self.script.pop(0) if self.script else (500, {"error": "script ran out"})
        self._send(status, answer)


def _chat_answer(text: str) -> dict:
    return {
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": text},
                "logprobs": {
                    "content": [{"token": "x", "logprob": -0.5}, {"token": "y", "logprob": -1.25}]
                },
            }
        ],
        "usage": {"prompt_tokens": 42, "completion_tokens": 2},
    }


@pytest.fixture
def scripted():
    """(base URL, handler class) of a fresh scripted server."""
    handler = type("Handler", (_Scripted,), {"script": [], "seen": [], "owned_by": "someone"})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1", handler
    server.shutdown()
    server.server_close()


def test_retries_503_and_429_then_succeeds(scripted, monkeypatch):
    url, handler = scripted
    monkeypatch.setenv("WEBAGENT_API_KEY", "sk-test")
    handler.script = [
        (503, {"error": "loading"}),
        (429, {"error": "slow down"}),
        (200, _chat_answer("Search Mona Lisa")),
    ]
    policy = EndpointPolicy(f"openai:{url}", config=FAST)
    (gen,) = policy.generate([policy.prompt("browse", "the observation")], max_new_tokens=16)
    assert gen.text == "Search Mona Lisa"
    assert gen.logprobs == [-0.5, -1.25] and gen.token_ids is None and gen.prompt_tokens == 42
    posts = [s for s in handler.seen if s[0].startswith("POST")]
    assert len(posts) == 3 and all(p[0] == "POST /v1/chat/completions" for p in posts)
    assert all(p[1]["Authorization"] == "Bearer sk-test" for p in handler.seen)
    body = posts[-1][2]
    assert body["model"] == "m" and body["stop"] == ["\n"] and body["max_tokens"] == 16
    assert (
        body["messages"][0]["role"] == "system"
        and body["messages"][-1]["content"] == "the observation"
    )
    assert "structured_outputs" not in body and "grammar" not in body  # this server owns no aid


def test_retries_are_bounded_and_other_errors_are_not_retried(scripted):
    url, handler = scripted
    policy = EndpointPolicy(f"openai:{url}", config=FAST)
    handler.script = [(503, {"error": "down"})] * 10
    with pytest.raises(EndpointError, match="HTTP 503"):
        policy.generate(["[]"], max_new_tokens=4)
    assert len(handler.script) == 10 - (FAST.max_retries + 1)
    handler.script = [(400, {"error": "bad request: max_tokens"})]
    with pytest.raises(EndpointError, match="HTTP 400.*max_tokens"):
        policy.generate(["[]"], max_new_tokens=4)
    handler.script = [(200, {"choices": []})]
    with pytest.raises(EndpointError, match="unexpected answer"):
        policy.generate(["[]"], max_new_tokens=4)


def test_each_request_carries_its_rows_temperature(scripted):
    url, handler = scripted
    handler.script = [(200, _chat_answer("Back")) for _ in range(3)]
    policy = EndpointPolicy(f"openai:{url}#m", config=FAST)
    prompts = [policy.prompt("browse", f"observation {i}") for i in range(3)]
    rows = [Sampling(temperature=t, top_p=0.9, seed=5) for t in (0.7, 0.0, 0.7)]
    policy.generate(prompts, sampling=rows, seeds=[1, 2, 3])
    sent = {
        b["messages"][-1]["content"]: (b["temperature"], b["seed"])
        for m, _, b in handler.seen
        if m.startswith("POST")
    }
    assert sent == {"observation 0": (0.7, 1), "observation 1": (0.0, 2), "observation 2": (0.7, 3)}


def test_vllm_server_gets_the_admissible_regex(scripted):
    url, handler = scripted
    handler.owned_by = "vllm"
    handler.script = [(200, _chat_answer("Back"))]
    policy = EndpointPolicy(f"openai:{url}#m", config=FAST)
    assert policy.record_meta["endpoint"]["decoding_aid"].startswith("regex")
    adm = Admissible(("Back", "Clicked on link 0"), ("Search",))
    policy.generate(["[]"], constrained=[adm])
    body = handler.seen[-1][2]
    assert body["structured_outputs"] == {"regex": admissible_regex(adm)}


def test_reanswer_finishes_answers_as_the_browser_does(scripted, wiki):
    """One helper (`EpisodeRecord.finish_answer`) finalizes every answer: the same answer over
    the same quotes gets the same fields whether the browser's answer step or an answer-only
    episode (`reanswer`, here through a served policy) wrote it; an empty one is no answer."""
    url, handler = scripted
    env = BrowserEnv(wiki, EnvConfig(limits=BrowseLimits(max_actions=10)))

    def browsed(answer: str) -> EpisodeRecord:
        env.reset("Which river flows through Baghdad?", seed=0)
        env.step("Search Baghdad")
        env.step("Clicked on link 0")
        quote = next(c for c in env.admissible().commands if "Tigris" in c and "Quote" in c)
        for action in [quote, "End: Answer"]:
            env.step(action)
        return env.step(answer)[4]["record"]

    def fields(record: EpisodeRecord) -> tuple:
        answer = (record.raw_answer, record.answer, record.supported_by_quotes)
        return (*answer, record.meta.get("no_answer"))

    policy = EndpointPolicy(f"openai:{url}#m", config=FAST)
    browse = browsed("Tigris [1]")
    expected = {
        "Tigris [1]": ("Tigris [1]", "Tigris [1]", True, None),
        " Euphrates [1][2] ": ("Euphrates [1][2]", "Euphrates", False, None),
        "[1]": ("[1]", None, None, WROTE_NO_ANSWER),  # nothing left after the check
        "": ("", None, None, WROTE_NO_ANSWER),
    }
    for seed, (answer, want) in enumerate(expected.items()):
        handler.script = [(200, _chat_answer(answer))] * 2  # an empty answer is asked again
        (again,) = reanswer(policy, [browse], [seed], RunConfig(batch_size=1))
        assert fields(browsed(answer)) == fields(again) == want, answer


def test_server_down_is_a_clear_error_at_once():
    port = _free_port()  # nothing listens here
    t0 = time.perf_counter()
    with pytest.raises(EndpointError, match="cannot reach the policy server"):
        EndpointPolicy(f"openai:http://127.0.0.1:{port}/v1")
    assert time.perf_counter() - t0 < 3
    # the CLI: one clear line, before any episode
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "webagent.cli",
            "ask",
            "Who painted the Mona Lisa?",
            "--model",
            f"openai:http://127.0.0.1:{port}/v1",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 1
    assert "cannot reach the policy server" in out.stderr and "Traceback" not in out.stderr


# ------------------------------------------------------------------ transformers serve
_SERVING = all(importlib.util.find_spec(m) for m in ("fastapi", "uvicorn", "openai"))


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """`transformers serve` on a free port, serving the prepared SmolLM2-135M directory
    offline; stopped at the end of the module."""
    if not _SERVING:
        pytest.skip("the serving extra is not installed (pip install -e '.[serving]')")
    from webagent.models import prepare

    model_dir = prepare("smollm2-135m")
    port = _free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    log = tmp_path_factory.mktemp("serve") / "serve.log"  # a file: a full pipe would stall it
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from transformers.cli.transformers import main; main()",
            "serve",
            str(model_dir),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--device",
            "cpu",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=(log_file := log.open("w")),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while True:
            if proc.poll() is not None:
                pytest.fail(f"transformers serve exited: {log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.time() > deadline:
                pytest.fail("transformers serve did not come up within 180 s")
            time.sleep(0.5)
        yield f"{url}/v1", str(model_dir)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log_file.close()


@pytest.mark.slow
def test_transformers_serve_plays_recorded_episodes(served, wiki, page_cache):
    url, model_dir = served
    policy = EndpointPolicy(f"openai:{url}", examples=0)
    assert policy.model == model_dir and policy.route == "chat"
    assert policy.record_meta["endpoint"]["decoding_aid"].startswith("off")

    def make_env():
        return BrowserEnv(wiki, EnvConfig(limits=BrowseLimits(max_actions=2)), cache=page_cache)

    config = RunConfig(batch_size=2, sampling=Sampling(temperature=0.0, seed=3))
    questions = ["Who painted the Mona Lisa?", "Which river flows through Baghdad?"]
    records = dict(run_episodes(policy, [Task(q) for q in questions], make_env, config))
    assert sorted(records) == [0, 1]
    for record in records.values():
        assert record.model == f"openai:{url}"
        assert record.meta["endpoint"]["model"] == model_dir
        steps = [s for s in record.steps if s.prompt is not None]
        assert steps, record.steps
        for step in steps:
            messages = json.loads(step.prompt)  # the chat prompt is recorded as sent
            assert messages[0]["role"] == "system" and messages[-1]["role"] == "user"
            assert step.completion is not None and step.prompt_tokens > 100
            assert step.logprobs is None  # transformers serve returns none


@pytest.mark.slow
def test_transformers_serve_completions_route_and_cli_eval(served, tmp_path):
    url, _ = served
    policy = EndpointPolicy(f"openai:{url}", prefer_chat=False, examples=0)
    assert policy.route == "completions" and policy.format.style == "base"
    (gen,) = policy.generate(["The capital of France is"], max_new_tokens=6)
    assert gen.text.strip() and gen.prompt_tokens == 5
    # eval (closed-book: short prompts) through the CLI, results and config on disk
    data = tmp_path / "q.jsonl"
    data.write_text(
        json.dumps({"id": "q1", "question": "What is the capital of France?", "answer": ["Paris"]})
        + "\n"
    )
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "webagent.cli",
            "eval",
            str(data),
            "--closed-book",
            "--model",
            f"openai:{url}",
            "--out",
            str(tmp_path / "run"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    (row,) = [json.loads(line) for line in (tmp_path / "run" / "results.jsonl").open()]
    assert row["question_id"] == "q1" and json.loads(row["prompt"])[-1]["role"] == "user"
    settings = json.loads((tmp_path / "run" / "config.json").read_text())
    assert settings["policy"]["int8"] is False, "a served model's arithmetic is not int8 here"


@pytest.mark.slow
def test_served_model_gets_the_local_prompt_and_decodes_the_same(served, smollm2, wiki):
    """The server renders our chat messages into the very tokens the local model's prompt has
    (same count), and greedy decoding of the same weights gives the same command."""
    from webagent.policy import HFPolicy
    from webagent.prompts import format_for

    url, _ = served
    local = HFPolicy(
        smollm2.model, smollm2.tokenizer, prompt_format=format_for(smollm2.tokenizer, examples=4)
    )
    remote = EndpointPolicy(f"openai:{url}", examples=4)
    obs, _ = BrowserEnv(wiki).reset("Who painted the Mona Lisa?")
    prompts = [
        (local.prompt("browse", obs), remote.prompt("browse", obs)),
        (
            local.format.closed_book("Who painted the Mona Lisa?", local.tokenizer),
            remote.format.closed_book("Who painted the Mona Lisa?", remote.tokenizer),
        ),
    ]
    for mine, theirs in prompts:
        (a,) = local.generate([mine], max_new_tokens=16)
        (b,) = remote.generate([theirs], max_new_tokens=16)
        assert b.prompt_tokens == a.prompt_tokens
        assert b.text.strip() == a.text.strip() and a.text.strip()
