"""Remote engines against a real ``tempscope serve`` process on loopback, with a fault proxy."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import pytest

from tempscope.remote import RemoteClient, RemoteError
from tempscope.remote_engine import remote_generate, remote_next_token
from tempscope.sampling import SamplingParams
from tests.conftest import run_cli
from tests.remote_proxy import fault_proxy
from tests.server_helpers import LiveServer, free_port, live_server


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path) -> Iterator[LiveServer]:
    with live_server(tiny_model_dir) as s:
        yield s


def client(url: str, **kw: object) -> RemoteClient:
    return RemoteClient(url, backoff=0.01, max_retries=3, timeout=60, **kw)  # type: ignore[arg-type]


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
        c.logprobs_fields()  # probe first, so the faults hit the generation request
        faults.statuses = [429, 500]
        out = remote_generate(c, "The cat", SamplingParams(temperature=0),
                              max_new_tokens=3)
        assert out[0].n_tokens == 3
        assert c.stats.retries == 2 and c.stats.retried_statuses == ["429", "500"]
        faults.statuses = [500] * 10
        with pytest.raises(RemoteError, match="HTTP 500"):
            remote_generate(c, "The cat", SamplingParams(temperature=0), max_new_tokens=3)


def test_nothing_listening_is_a_clear_error() -> None:
    c = client(f"http://127.0.0.1:{free_port()}/v1", model="m")
    with pytest.raises(RemoteError, match=r"unreachable after 4 tries.*is the server running"):
        remote_generate(c, "x", SamplingParams(), max_new_tokens=1)
    proc = run_cli("next", "x", "--endpoint", f"http://127.0.0.1:{free_port()}/v1",
                   "--remote-model", "m")
    assert proc.returncode == 2 and "unreachable" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_next_and_generate(server: LiveServer) -> None:
    proc = run_cli("next", "The cat", "-t", "0.5", "1", "--top", "3", "--seed", "0",
                   "--endpoint", server.base_url)
    assert proc.returncode == 0, proc.stderr
    assert "top-" in proc.stdout and "outside the top" in proc.stdout
    proc = run_cli("next", "The cat", "-t", "1", "--top", "3", "--json",
                   "--endpoint", server.base_url)
    data = json.loads(proc.stdout)
    assert data["approximation"].startswith("top-") and 0 < data["mass_outside_top_n"] < 1
    proc = run_cli("generate", "The cat", "-t", "0", "0.8", "--n", "2", "--max-new-tokens",
                   "4", "--seed", "1", "--json", "--endpoint", server.base_url)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert len(rows) == 4 and all(r["remote"]["logprobs_raw"] for r in rows)


def test_cli_generate_warns_about_refused_settings(server: LiveServer) -> None:
    with fault_proxy(server.url) as (url, faults):
        faults.refuse = {"typical_p"}
        proc = run_cli("generate", "The cat", "--typical-p", "0.9", "--max-new-tokens", "3",
                       "--seed", "0", "--endpoint", url)
    assert proc.returncode == 0, proc.stderr
    assert "refused typical_p" in proc.stderr and "NOT applied" in proc.stderr


def test_sweep_report_and_resume_after_server_killed(tiny_model_dir: Path,
                                                    tmp_path: Path) -> None:
    from tempscope.report import write_report
    from tempscope.study import read_manifest, read_records, sweep

    out = tmp_path / "run"
    prompts = ["The cat", "A dog", "One two"]
    temps = [0.0, 1.0]
    with live_server(tiny_model_dir) as first, fault_proxy(first.url) as (url, faults):
        faults.before = lambda count: first.process.kill() if count == 7 else None
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
    html = write_report(out)
    assert html.exists() and (out / "figures" / "coherence.png").exists()
    assert not (out / "figures" / "first_step.png").exists()


def test_cli_sweep_fault_message_then_resume(server: LiveServer, tmp_path: Path) -> None:
    out = tmp_path / "cli-run"
    args = ["sweep", "-p", "The cat", "-t", "0", "1", "--n", "2", "--max-new-tokens", "3",
            "--out", str(out), "--concurrency", "1"]
    with fault_proxy(server.url) as (url, faults):
        # The first generation request (after /models and the probe) gets through, then 503s.
        faults.before = lambda count: faults.statuses.extend([503] * 50) if count == 3 else None
        proc = run_cli(*args, "--endpoint", url)
    assert proc.returncode == 2 and "rerun the same command to resume" in proc.stderr
    saved = (out / "samples.jsonl").read_text().splitlines()
    assert len(saved) == 2  # the greedy cell: one request, copied n = 2 times
    proc = run_cli(*args, "--endpoint", server.base_url)
    assert proc.returncode == 0, proc.stderr
    assert (out / "samples.jsonl").read_text().splitlines()[:2] == saved
    proc = run_cli("report", str(out))
    assert proc.returncode == 0, proc.stderr


def test_llama_cpp_server_optional() -> None:
    pytest.importorskip("llama_cpp", reason="llama-cpp-python[server] is not installed: "
                        "pip install 'llama-cpp-python[server]' to run the llama.cpp tests "
                        "(see docs/remote.md)")
    pytest.skip("llama.cpp server test: run `python -m llama_cpp.server --model MODEL.gguf` "
                "and `tempscope next ... --endpoint http://127.0.0.1:8000/v1` by hand")
