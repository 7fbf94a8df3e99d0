"""Remote engines against a real ``tempscope serve`` process on loopback, with a fault proxy."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tempscope.engine.generator import RemoteGenerator, Row
from tempscope.engine.remote.client import NEUTRAL_FIELDS, RemoteClient, RemoteError
from tempscope.engine.remote.engine import check_settings, remote_generate, remote_next_token
from tempscope.sampling import SamplingParams
from tests.conftest import run_cli
from tests.remote_proxy import Faults, fault_proxy
from tests.server_helpers import LiveServer, free_port, live_server, stop, wait_until_up


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path) -> Iterator[LiveServer]:
    with live_server(tiny_model_dir) as s:
        yield s


def client(url: str, **kw: object) -> RemoteClient:
    return RemoteClient(url, backoff=0.01, max_retries=3, timeout=60, **kw)  # type: ignore[arg-type]


def setup_requests(url: str, faults: Faults) -> int:
    """How many requests a fresh client sends through the proxy before its first generation:
    ``/models`` and the feature probes (they hit the proxy first, then the generations)."""
    start = faults.count
    with client(url) as c:
        check_settings(c, {"default": SamplingParams()})
    return faults.count - start


def test_next_token_top_n_views(server: LiveServer) -> None:
    with client(server.base_url) as c:
        r = remote_next_token(c, "The cat", [0, 1, 2, math.inf], top=5, seed=0)
    assert r.logprobs_raw and not r.not_derived  # tempscope serve gives raw logprobs on request
    assert c.max_logprobs == 20  # 100 refused with a 400, fell back to OpenAI's cap
    t0, t1, t2, tinf = r.results
    assert t0.probabilities[0] == 1.0 and t0.sampled == 0
    # T = 1: the server's own numbers, and the mass outside them is what they leave.
    assert t1.exact and math.isclose(sum(math.exp(v) for v in t1.logprobs[:1]),
                                     t1.probabilities[0])
    assert 0 < r.mass_outside < 1
    # T = 2 renormalises over the top-N: p_i ∝ exp(logp_i / 2).
    ratio = t2.probabilities[0] / t2.probabilities[1]
    assert math.isclose(ratio, math.exp((t2.logprobs[0] - t2.logprobs[1]) / 2), rel_tol=1e-9)
    assert not t2.exact and math.isclose(tinf.probabilities[0], 1 / r.top_n)
    assert t2.entropy > t1.entropy


def test_next_token_processed_logprobs_say_what_cannot_be_derived(server: LiveServer) -> None:
    with fault_proxy(server.url) as (url, faults):
        faults.refuse = {"logprobs_mode"}
        with client(url) as c:
            r = remote_next_token(c, "The cat", [0.5, 1, 2], top=3, seed=0)
    assert not r.logprobs_raw and r.not_derived == [0.5, 2]
    assert [v.temperature for v in r.results] == [1.0]
    assert "cannot be derived" in r.note and "--logprobs-raw" in r.note


def test_generate_rows_seeded_and_raw(server: LiveServer) -> None:
    with client(server.base_url, concurrency=4) as c:
        params = [SamplingParams(temperature=0), SamplingParams(temperature=1.0, min_p=0.01)]
        out = remote_generate(c, "The cat", params, n=2, max_new_tokens=6, seed=3)
        again = remote_generate(c, "The cat", params[1], n=1, max_new_tokens=6, seed=3)
    assert [(s.params_index, s.sample_index) for s in out] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert out[0].text == out[1].text  # greedy
    assert again[0].text == out[2].text  # seed 3 is sample 0's seed: the same request
    for s in out:
        assert s.token_ids == [] and s.n_tokens == len(s.steps) >= 1
        assert s.finish_reason in ("length", "eos") and s.ignored == []
        assert math.isfinite(s.mean_logprob) and s.logprobs_raw
        assert math.isnan(s.steps[0].logprob)  # processed numbers were not returned


def test_generator_runs_rows_on_the_server(server: LiveServer) -> None:
    """The interface the sweep and the CLI use: each row's own budget and stops, step events
    and results as answers arrive, the same samples as remote_generate."""
    greedy, hot = SamplingParams(temperature=0), SamplingParams(temperature=1.0)
    rows = [Row("The cat", greedy, 3, 2), Row("A dog", hot, 4, 5),
            Row("One two", greedy, None, 3, stop_at_newline=True)]
    steps: list[object] = []
    done: list[int] = []
    with RemoteGenerator(client(server.base_url, concurrency=3)) as gen:
        out = gen.run(rows, top_alternatives=2, on_step=steps.append,
                      on_result=lambda i, s: done.append(i))
        (again,) = remote_generate(gen.client, "A dog", hot, max_new_tokens=5, seed=4)
        check = gen.check_settings({"default": hot})
    assert sorted(done) == [0, 1, 2] and len(steps) == sum(len(s.steps) for s in out)
    assert [(s.row, s.prompt) for s in out] == [(0, "The cat"), (1, "A dog"), (2, "One two")]
    assert 1 <= out[0].n_tokens <= 2 and 1 <= out[1].n_tokens <= 5
    assert out[1].text == again.text and out[1].seed == 4
    assert gen.describe(out[1])["remote"]["logprobs_raw"] and check.logprobs_raw
    assert check.manifest["remote"]["endpoint"] == server.base_url and check.ignored == []
    assert gen.score_texts(["The cat"], [" sat"]) is None


def test_refused_field_is_reported_not_sent(server: LiveServer) -> None:
    with fault_proxy(server.url) as (url, faults):
        faults.refuse = {"min_p", "logprobs_mode"}
        with client(url) as c:
            out = remote_generate(c, "The cat", SamplingParams(temperature=1.0, min_p=0.1),
                                  max_new_tokens=3, seed=0)
        sent = [b for b in faults.seen if b.get("max_tokens") == 3]
    assert out[0].ignored == ["min_p"] and "min_p" in c.refused["min_p"]
    assert sent and all("min_p" not in b for b in sent)
    assert not out[0].logprobs_raw and math.isnan(out[0].mean_logprob)  # honest: not raw


def test_retries_on_429_and_500_are_counted(server: LiveServer) -> None:
    with fault_proxy(server.url) as (url, faults), client(url) as c:
        check_settings(c, {"default": SamplingParams()})  # probe first: faults hit generation
        faults.statuses = [429, 500]
        out = remote_generate(c, "The cat", SamplingParams(temperature=0),
                              max_new_tokens=3)
        assert out[0].n_tokens == 3
        assert c.stats.retries == 2 and c.stats.retried_statuses == ["429", "500"]
        faults.statuses = [500] * 10
        with pytest.raises(RemoteError, match="HTTP 500"):
            remote_generate(c, "The cat", SamplingParams(temperature=0), max_new_tokens=3)


def test_settings_left_off_are_sent_switched_off(server: LiveServer) -> None:
    with fault_proxy(server.url) as (url, faults):
        with client(url) as c:
            out = remote_generate(c, "The cat", SamplingParams(temperature=1.5, min_p=0.02),
                                  max_new_tokens=3, seed=0)
        sent = [b for b in faults.seen if b.get("max_tokens") == 3]
    # tempscope serve takes vLLM's names (and tfs_z) and refuses llama.cpp's other spellings:
    # those are not sent.
    assert set(c.neutral_refused) == {"repeat_penalty", "mirostat_mode"}
    told = {"top_k": 0, "top_p": 1.0, "typical_p": 1.0, "repetition_penalty": 1.0,
            "frequency_penalty": 0.0, "presence_penalty": 0.0, "min_p": 0.02, "tfs_z": 1.0}
    assert len(sent) == 1 and {k: sent[0].get(k) for k in told} == told
    assert not set(c.neutral_refused) & set(sent[0])
    assert out[0].sent == told and out[0].ignored == []


def test_nothing_listening_is_a_clear_error() -> None:
    """A server that never answered: a refused connection is retried FIRST_CONTACT_RETRIES
    times, not max_retries (a wrong port fails in about a second, not ~15 s)."""
    c = client(f"http://127.0.0.1:{free_port()}/v1", model="m")
    with pytest.raises(RemoteError, match=r"unreachable after 3 tries.*is the server running"):
        remote_generate(c, "x", SamplingParams(), max_new_tokens=1)
    proc = run_cli("next", "x", "--endpoint", f"http://127.0.0.1:{free_port()}/v1",
                   "--remote-model", "m")
    assert proc.returncode == 2 and "unreachable" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_server_that_answered_before_gets_every_retry() -> None:
    """Once the server has answered, a refused connection (a restart) gets all max_retries."""
    import http.server
    import threading

    class Models(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps({"object": "list", "data": [{"id": "m"}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Models)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    c = client(f"http://127.0.0.1:{httpd.server_address[1]}/v1")
    assert c.models() == ["m"]
    httpd.shutdown()
    httpd.server_close()
    with pytest.raises(RemoteError, match=r"unreachable after 4 tries"):
        c.models()
    assert c.stats.retries == 3


def test_cli_next_and_generate(server: LiveServer, tmp_path: Path) -> None:
    proc = run_cli("next", "The cat", "-t", "0.5", "1", "--top", "3", "--seed", "0",
                   "--endpoint", server.base_url)
    assert proc.returncode == 0, proc.stderr
    assert "top-" in proc.stdout and "outside the top" in proc.stdout
    proc = run_cli("next", "The cat", "-t", "1", "--top", "3", "--json",
                   "--endpoint", server.base_url)
    data = json.loads(proc.stdout)
    assert data["approximation"].startswith("top-") and 0 < data["mass_outside_top_n"] < 1
    plot = tmp_path / "next.png"
    proc = run_cli("next", "The cat", "-t", "0.5", "1", "2", "--top", "4", "--plot", str(plot),
                   "--endpoint", server.base_url)
    assert proc.returncode == 0, proc.stderr
    assert plot.stat().st_size > 1000  # the returned tokens, side by side at each T
    proc = run_cli("generate", "The cat", "-t", "0", "0.8", "--n", "2", "--max-new-tokens",
                   "4", "--seed", "1", "--json", "--endpoint", server.base_url)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert len(rows) == 4 and all(r["remote"]["logprobs_raw"] for r in rows)


def test_cli_next_sampler_options_need_a_server_that_reports_processed_probs(
        server: LiveServer) -> None:
    with client(server.base_url) as c:
        assert not c.server.is_llama_server  # no llama-server /props: probed field by field
    proc = run_cli("next", "The cat", "-t", "1", "--top-k", "3", "--endpoint", server.base_url)
    assert proc.returncode == 2 and "llama-server" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_cli_generate_warns_about_refused_settings(server: LiveServer) -> None:
    with fault_proxy(server.url) as (url, faults):
        faults.refuse = {"typical_p"}
        proc = run_cli("generate", "The cat", "--typical-p", "0.9", "--max-new-tokens", "3",
                       "--seed", "0", "--endpoint", url)
    assert proc.returncode == 0, proc.stderr
    assert "refused typical_p" in proc.stderr and "NOT applied" in proc.stderr


def test_sweep_report_and_resume_after_server_killed(tiny_model_dir: Path,
                                                    tmp_path: Path) -> None:
    from tempscope.report.sweep import write_report
    from tempscope.study.grid import read_manifest, read_records, sweep

    out = tmp_path / "run"
    prompts = ["The cat", "A dog", "One two"]
    temps = [0.0, 1.0]
    with live_server(tiny_model_dir) as first, fault_proxy(first.url) as (url, faults):
        kill_at = 2 * setup_requests(url, faults) + 5  # during the 5th generation request
        faults.before = lambda count: first.process.kill() if count == kill_at else None
        with client(url, concurrency=1) as c, pytest.raises(RemoteError):
            sweep(c, prompts, temps, n=2, max_new_tokens=4, out=out, batch_rows=3)
        kept, _ = read_records(out)
        assert 0 < len(kept) < 12  # some cells were saved before the kill
        with live_server(tiny_model_dir) as second:
            faults.upstream = second.url
            with client(url, concurrency=3) as c:
                frame = sweep(c, prompts, temps, n=2, max_new_tokens=4, out=out, batch_rows=3)
    assert len(frame) == 12
    records, _ = read_records(out)
    assert records[: len(kept)] == kept  # nothing received before the fault was lost
    assert len({(r["prompt_index"], r["temperature"], r["sample_index"]) for r in records}) == 12
    manifest = read_manifest(out)
    assert manifest["remote"]["logprobs_raw"] and manifest["remote"]["ignored"] == []
    neutral = {k: v for k, v in NEUTRAL_FIELDS.items() if k not in ("repeat_penalty",
                                                                    "mirostat_mode")}
    assert manifest["remote"]["neutral"] == neutral
    assert manifest["remote"]["sent"] == {"default": neutral}
    assert set(manifest["remote"]["neutral_refused"]) == {"repeat_penalty", "mirostat_mode"}
    html = write_report(out)
    assert html.exists() and (out / "figures" / "coherence.png").exists()
    assert not (out / "figures" / "first_step.png").exists()


def test_cli_sweep_fault_message_then_resume(server: LiveServer, tmp_path: Path) -> None:
    out = tmp_path / "cli-run"
    args = ["sweep", "-p", "The cat", "-t", "0", "1", "--n", "2", "--max-new-tokens", "3",
            "--out", str(out), "--concurrency", "1"]
    with fault_proxy(server.url) as (url, faults):
        # The first generation request (after /models and the probes) gets through, then 503s.
        first = 2 * setup_requests(url, faults) + 1
        faults.before = (lambda count: faults.statuses.extend([503] * 50) if count == first
                         else None)
        proc = run_cli(*args, "--endpoint", url)
    assert proc.returncode == 2 and "rerun the same command to resume" in proc.stderr
    saved = (out / "samples.jsonl").read_text().splitlines()
    assert len(saved) == 2  # the greedy cell: one request, copied n = 2 times
    proc = run_cli(*args, "--endpoint", server.base_url)
    assert proc.returncode == 0, proc.stderr
    assert (out / "samples.jsonl").read_text().splitlines()[:2] == saved
    proc = run_cli("report", str(out))
    assert proc.returncode == 0, proc.stderr


@contextmanager
def llama_cpp_server(log: Path) -> Iterator[str]:
    """Run llama-cpp-python's own OpenAI-compatible server on the embedded GGUF; yields its
    ``/v1`` URL once ``/v1/models`` answers."""
    from tempscope.engine.loader import embedded_gguf_path

    port = free_port()
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(embedded_gguf_path()),
             "--host", "127.0.0.1", "--port", str(port), "--n_threads", "2", "--n_ctx", "512",
             "--logits_all", "true", "--verbose", "false"],
            stdout=out, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        wait_until_up(proc, url + "/models", log, 60)
        yield url
    finally:
        stop(proc)


@pytest.mark.slow
def test_llama_cpp_server_measures_what_was_asked(tmp_path: Path) -> None:
    """llama-cpp-python's server samples with top-k 40, top-p 0.95, min-p 0.05 and repeat
    penalty 1.1 unless told otherwise; tempscope tells it every one of them is off."""
    pytest.importorskip("llama_cpp.server.app", reason="llama-cpp-python's server is not "
                        "installed: pip install 'tempscope[llama]' (llama-cpp-python[server])")
    off = {"top_k": 0, "top_p": 1.0, "min_p": 0.0, "repeat_penalty": 1.0, "mirostat_mode": 0}
    prompt = "The cat slept on the"
    with llama_cpp_server(tmp_path / "llama-cpp-server.log") as url:
        proc = run_cli("next", prompt, "-t", "0.5", "1", "2", "--top", "3", "--seed", "0",
                       "--endpoint", url)
        assert proc.returncode == 0, proc.stderr
        (line,) = [ln for ln in proc.stdout.splitlines()
                   if ln.startswith("samplers switched off on the server: ")]
        assert "top_k=0" in line and "min_p=0" in line and "repeat_penalty=1" in line
        assert "nan" not in proc.stdout and "outside the top-" in proc.stdout
        proc = run_cli("next", prompt, "-t", "1", "--json", "--endpoint", url)
        assert proc.returncode == 0, proc.stderr
        nxt = json.loads(proc.stdout)
        assert {k: nxt["sent"][k] for k in off} == off
        assert nxt["results"][0]["top"][0]["text"] == " couch"
        assert 0 < nxt["mass_outside_top_n"] < 1

        proc = run_cli("generate", prompt, "-t", "0", "1.5", "--n", "2", "--max-new-tokens",
                       "8", "--seed", "1", "--json", "--endpoint", url)
        assert proc.returncode == 0, proc.stderr
        rows = json.loads(proc.stdout)
        assert len(rows) == 4 and all(r["text"] for r in rows)
        assert rows[0]["text"] == rows[1]["text"]  # greedy
        # Raw log p (llama-cpp-python's logprobs are log-softmax of the logits): at T = 1.5
        # with nothing cut off, the text is far less likely than the greedy one.
        assert all(r["mean_logprob"] < rows[0]["mean_logprob"] - 3 for r in rows[2:])
        for r in rows:
            assert {k: r["remote"]["sent_settings"][k] for k in off} == off
            assert r["remote"]["ignored_settings"] == []
        table = run_cli("generate", prompt, "-t", "1", "--max-new-tokens", "4", "--seed", "1",
                        "--endpoint", url)
        assert table.returncode == 0, table.stderr
        assert "–" in table.stdout and not re.search(r"\bnan\b", table.stdout, re.IGNORECASE)
        # The same request, as tempscope sent it and as the server's defaults would have it.
        hot = rows[2]
        body = {"prompt": prompt, "max_tokens": 8, "temperature": 1.5, "seed": hot["seed"]}
        told = httpx.post(url + "/completions", timeout=60,
                          json={**body, **hot["remote"]["sent_settings"]}).json()
        defaults = httpx.post(url + "/completions", json=body, timeout=60).json()
        assert told["choices"][0]["text"] == hot["text"]
        assert defaults["choices"][0]["text"] != hot["text"]

        out = tmp_path / "run"
        proc = run_cli("sweep", "-p", prompt, "-t", "0", "1.5", "--n", "2",
                       "--max-new-tokens", "8", "--seed", "1", "--out", str(out),
                       "--endpoint", url)
        assert proc.returncode == 0, proc.stderr
        assert "4 samples" in proc.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    remote = manifest["remote"]
    assert remote["ignored"] == [] and remote["refused"] == {}
    assert {k: remote["neutral"][k] for k in off} == off
    assert {k: remote["sent"]["default"][k] for k in off} == off
    proc = run_cli("report", str(out))
    assert proc.returncode == 0, proc.stderr
    text = re.sub(r"data:[^\"')]+", "", (out / "report.html").read_text())  # no images
    assert "–" in text and not re.search(r"\bnan\b", text, re.IGNORECASE)  # entropy unknown
