"""The LLM backends for real (slow tier): the local instruct model in-process, and the openai backend against
``llama_cpp.server`` serving the embedded SmolLM2 GGUF on 127.0.0.1, end to end through Dagster, then with
faults injected by a proxy on the same path (500s, a hang past the timeout, nonsense answers)."""

import time

import dagster as dg
import pytest
from chains import run_planted_chain
from dagster_runs import check_evaluations
from servers import LLAMA_MODEL_ALIAS, FaultProxy, llama_server

from lookups.assets.runner import run_partition
from lookups.pipeline import steps
from lookups.pipeline.config import ExplanationSettings, HeadScoreSettings, ScoringSettings
from lookups.pipeline.inputs import planted
from lookups.pipeline.store.sql_files import TABLE_KEYS
from lookups.pipeline.store.store import Store

pytestmark = pytest.mark.slow

#: Every head of the planted neuron counts as consistent, so there are several pairs to explain.
WIDE = {"consistent_min": 0.0, "consistent_max": 1.0}
SECRET = "sk-test-do-not-store-0123456789"

#: Statuses of an explanation the LLM answered (a comparison is flagged, not failed).
ANSWERED = ("ok", "comparison")


@pytest.fixture(scope="module")
def server():
    with llama_server() as server:
        yield server


@pytest.fixture
def proxy(server, monkeypatch):
    """The fault proxy in front of the server, which must be alive before and after each test: a server that
    died mid-test fails it with its exit status and log, not with rows of `status = error`."""
    server.check()
    with FaultProxy(server.url) as proxy:
        monkeypatch.setenv("LOOKUPS_LLM_BASE_URL", proxy.url)
        monkeypatch.setenv("LOOKUPS_LLM_API_KEY", SECRET)
        monkeypatch.setenv("LOOKUPS_LLM_MODEL", LLAMA_MODEL_ALIAS)
        yield proxy
    server.check()


def test_local_backend_explains_scores_caches_and_recomputes_only_on_a_template_change(tmp_path):
    circuit, store, handles = run_planted_chain(tmp_path / "planted", ablate=False)
    model, head_scores = handles["model"], handles["head_neuron_scores"]
    settings = ExplanationSettings(backend="local")
    explained = steps.run_explanations(model, head_scores, settings, store)
    # answered: 'ok', or 'comparison' when the small model compares the groups instead of stating a rule (flagged, kept)
    pairs = explained.stats["pairs"]  # the planted pair, and the random neuron's where it has a consistent head
    answered = explained.stats.get("status_ok", 0) + explained.stats.get("status_comparison", 0)
    assert pairs in (1, 2) and explained.stats["llm_calls"] == pairs and answered == pairs
    local = store.query("SELECT * FROM explanations WHERE backend = 'local'")
    assert local["llm_model"][0].startswith("smollm2-135m-instruct@") and len(local["explanation"][0]) > 20
    assert local["prompt_tokens"][0] > 100 and local["completion_tokens"][0] > 5
    # simulation_explainers 'all': the local judge also rates the references, so it is asked even where its own
    # explanation is flagged as a comparison (then not judged, and scored as not_scored with that reason).
    scored = steps.run_explanation_scores(model, explained.handle, ScoringSettings(simulation_explainers="all"), store)
    assert scored.stats["llm_calls"] > 5
    rows = store.query("SELECT * FROM explanation_scores WHERE explainer LIKE 'local:%' AND baseline = 'none' AND scorer = 'detection'")
    judged = rows[rows["status"] == "scored"]
    assert ((rows["status"] == "scored") | (rows["reason"] == "explanation comparison")).all(), rows[["status", "reason"]]
    assert judged["e_score"].between(0, 1).all() and judged["auc"].between(0, 1).all()  # P(Yes) from the logits
    calls = store.query("SELECT purpose, count(*) AS n, count(p_yes) AS with_p, count(rating) AS rated FROM llm_calls GROUP BY purpose").set_index("purpose")
    assert calls.at["simulate", "rated"] == calls.at["simulate", "n"] > 0
    assert "classify" not in calls.index or calls.at["classify", "with_p"] == calls.at["classify", "n"]
    assert len(judged) or "classify" not in calls.index

    # Nothing changed: both steps skip, no LLM call.
    assert steps.run_explanations(model, head_scores, settings, store).skipped
    n_calls = store.query("SELECT count(*) AS n FROM llm_calls")["n"][0]
    # A new template: the explanations (and their scores) recompute; nothing upstream does.
    own = tmp_path / "explain.v2.txt"
    own.write_text(
        "--- system ---\nYou explain attention heads.\n--- user ---\nThe model predicts $token after each snippet.\n"
        "Active:\n$active\nInactive:\n$inactive\nWhen is the head active? Two sentences.\n"
    )
    again = steps.run_explanations(model, head_scores, ExplanationSettings(backend="local", explain_template=str(own)), store)
    assert not again.skipped and again.stats["llm_calls"] == pairs and again.stats["template"].startswith("explain.v2@")
    assert store.query("SELECT count(*) AS n FROM llm_calls")["n"][0] == n_calls + pairs
    assert steps.run_head_scores(handles["head_attributions"], HeadScoreSettings(), store).skipped


def test_openai_backend_against_llama_cpp_server_through_dagster(proxy, tmp_path):
    circuit = planted.build_planted_circuit(tmp_path / "planted")
    run_config = circuit.run_config()
    run_config["ops"]["head_neuron_scores"] = {"config": WIDE}
    run_config["ops"]["explanations"] = {"config": {"backend": "auto", "pairs_per_neuron": 2, "max_pairs": 2, "timeout_s": 120.0}}
    # The server also rates the references' explanations: its logprobs path is exercised even where the tiny model's
    # own explanations are flagged as comparisons (and so not judged).
    run_config["ops"]["explanation_scores"] = {"config": {"simulation_explainers": "all"}}
    with dg.DagsterInstance.ephemeral() as instance:
        first = run_partition(instance, run_config)
        assert first.success
        checks = check_evaluations(first)
        assert all(c.passed for c in checks), [c for c in checks if not c.passed]
        requests = proxy.counts.get("pass", 0)
        store = Store()
        explained = store.query("SELECT cohort, status, explanation, llm_model FROM explanations WHERE backend = 'openai'")
        assert len(explained) == 4 and set(explained["cohort"]) == {"next_token", "random"}
        assert explained["status"].isin(ANSWERED).all() and (explained["llm_model"] == LLAMA_MODEL_ALIAS).all()
        scores = store.query("SELECT * FROM explanation_scores WHERE explainer = ?", [f"openai:{LLAMA_MODEL_ALIAS}"])
        assert set(scores["baseline"]) == {"none", "shuffled"}
        assert scores.loc[scores["status"] == "scored", "auc"].notna().all()  # P(Yes) from the server's logprobs
        assert (scores.loc[scores["status"] != "scored", "reason"].notna()).all()  # a flagged or unscorable one says why
        rated = store.query("SELECT * FROM explanation_scores WHERE scorer = 'simulation'")
        assert (rated["status"] == "scored").any(), rated[["explainer", "cohort", "baseline", "reason", "n_answered"]].to_string()
        ratings = store.query("SELECT rating FROM llm_calls WHERE purpose = 'simulate' AND status = 'ok'")["rating"]
        assert len(ratings) and ratings.between(0, 9).all() and (ratings % 1 != 0).any()  # expected values over top_logprobs
        usage = store.query("SELECT sum(prompt_tokens) AS p, sum(completion_tokens) AS c, count(*) AS n FROM llm_calls WHERE backend = 'openai'")
        assert 0 < usage["n"][0] <= requests and usage["p"][0] > 0 and usage["c"][0] > 0  # token usage per call
        tests = store.query("SELECT * FROM explanation_comparison")  # the server's explainer's rows where it was judged
        assert set(tests["baseline"]) == {"random_neurons", "shuffled"}

        # The endpoint and the key are nowhere: not in DuckDB, not in Dagster's events.
        for table in TABLE_KEYS:
            dump = store.query(f"SELECT * FROM {table}").to_csv()
            assert SECRET not in dump and proxy.url not in dump, table
        events = " ".join(str(e.event_specific_data) + str(e.message) for e in first.all_events)
        assert SECRET not in events and proxy.url not in events

        # Re-materializing with nothing changed makes zero LLM calls.
        second = run_partition(instance, run_config)
        assert second.success
        assert proxy.counts.get("pass", 0) == requests
        assert second.asset_materializations_for_node("explanations")[0].metadata["skipped (unchanged inputs)"].value is True


def test_faults_are_recorded_per_pair_retries_are_bounded_and_nothing_is_lost(proxy, tmp_path):
    circuit, store, handles = run_planted_chain(tmp_path / "planted", head_scores=HeadScoreSettings(**WIDE), ablate=False)
    model, head_scores = handles["model"], handles["head_neuron_scores"]
    base = {"backend": "openai", "pairs_per_neuron": 2, "max_pairs": 2, "timeout_s": 120.0}

    def statuses():  # an answer flagged as a comparison counts as answered ('ok') here: the test is about calls, not wording
        counts = store.query("SELECT status, count(*) AS n FROM explanations WHERE backend = 'openai' GROUP BY status").set_index("status")["n"].to_dict()
        answered = sum(counts.pop(s, 0) for s in ANSWERED)
        return {"ok": answered, **counts} if answered else counts

    # A budget of 2 calls: 2 explanations made and kept, 2 marked; the run finishes.
    limited = steps.run_explanations(model, head_scores, ExplanationSettings(**base, max_calls=2), store)
    assert limited.stats["budget_reached"] and not limited.complete
    assert statuses() == {"ok": 2, "budget_exhausted": 2}

    # The endpoint fails with 500s: the 2 kept come from the cache, the other 2 fail after exactly 1 + 2 tries each.
    proxy.mode = "error"
    failing = steps.run_explanations(model, head_scores, ExplanationSettings(**base, max_retries=2), store)
    assert not failing.skipped and proxy.counts["error"] == 2 * 3
    assert statuses() == {"ok": 2, "error": 2}
    errors = store.query("SELECT error FROM explanations WHERE status = 'error'")["error"]
    assert errors.str.contains("500").all()

    # The endpoint hangs past the timeout: bounded in time and in tries.
    proxy.mode = "hang"
    started = time.perf_counter()
    steps.run_explanations(model, head_scores, ExplanationSettings(**{**base, "max_retries": 1, "timeout_s": 1.0}), store)
    assert time.perf_counter() - started < 25 and proxy.counts["hang"] == 2 * 2
    assert statuses() == {"ok": 2, "error": 2}
    assert store.query("SELECT error FROM explanations WHERE status = 'error'")["error"].str.contains("Timeout").all()

    # Healthy again: only the 2 missing explanations are asked for.
    proxy.mode = "pass"
    before = proxy.counts.get("pass", 0)
    healed = steps.run_explanations(model, head_scores, ExplanationSettings(**base), store)
    # (A slow answer may be retried by the client, so the proxy can see more requests than calls.)
    assert healed.stats["llm_calls"] == 2 and proxy.counts["pass"] - before >= 2 and healed.complete
    assert statuses() == {"ok": 4}

    # Nonsense answers to every Yes/No question: counted as malformed, the scores step still finishes.
    proxy.mode = "nonsense"
    # (The server also rates the references' explanations, so it is asked even where the tiny model's own are flagged.)
    scored = steps.run_explanation_scores(model, healed.handle, ScoringSettings(simulation_explainers="all"), store)
    assert scored.stats["malformed_answers"] > 0 and scored.stats["llm_calls"] == proxy.counts["nonsense"]
    # Every row the LLM judged (detection of its own explanations, simulation of all) is not scored, with its reason.
    judged = store.query("SELECT * FROM explanation_scores WHERE (scorer = 'detection' AND explainer LIKE 'openai:%') OR scorer = 'simulation'")
    assert (judged["status"] == "not_scored").all() and judged["reason"].notna().all(), judged[["scorer", "explainer", "status", "reason"]]
    asked = judged[judged["n_malformed"] > 0]
    assert len(asked) and (asked["n_malformed"] == asked["n_positive"] + asked["n_negative"]).all()  # every answer malformed
    contrast = store.query("SELECT status FROM explanation_scores WHERE explainer = 'contrastive'")
    assert (contrast["status"] == "scored").any()


def test_local_yes_no_with_a_shared_prefix_equals_a_full_forward_pass():
    """The local backend runs the instructions + explanation once and reuses its KV cache for every snippet;
    P(Yes) must equal that of one full (left-padded) forward pass per question."""
    import torch

    from lookups.pipeline.llm.backends import LlmRequest, LocalBackend
    from lookups.pipeline.llm.templates import load_template, snippet

    backend = LocalBackend(ExplanationSettings(batch_size=3))
    template = load_template("classify.v1")
    prompts = ["The wizard walked into the old town", "He sold apples at the market near the river bank every", "A", "In 1854 the railway reached the"]
    requests = [
        LlmRequest(f"{e}-{i}", "classify", template.messages(token='" magic"', explanation=explanation, prompt=snippet(p, " magic", 300)), 3)
        for e, explanation in enumerate(["Active when a wizard is mentioned.", "Active after dates and places in history, such as railways."])
        for i, p in enumerate(prompts)
    ]
    got = {r.key: a.p_yes for r, a in backend.run(requests, lambda: True)}
    enc = backend._encode(requests)
    with torch.no_grad():
        probs = backend.lm(**enc).logits[:, -1].float().softmax(-1)
    yes, no = probs[:, backend.yes_ids].sum(-1), probs[:, backend.no_ids].sum(-1)
    for request, expected in zip(requests, (yes / (yes + no)).tolist()):
        assert got[request.key] == pytest.approx(expected, abs=1e-4), request.key
    # The budget stops it between batches, and nothing is answered beyond it.
    allowed = iter([True] * 4 + [False] * 10)
    assert len(list(backend.run(requests, lambda: next(allowed)))) == 4


def test_local_rating_with_a_shared_prefix_equals_the_expectation_of_a_full_forward_pass():
    """The simulation scorer's rating: the expected digit under the next-token distribution, through the shared
    prefix's KV cache, equals the one read from a full forward pass per question."""
    import torch

    from lookups.pipeline.llm.backends import RATINGS, LlmRequest, LocalBackend
    from lookups.pipeline.llm.templates import load_template, snippet

    backend = LocalBackend(ExplanationSettings(batch_size=2))
    template = load_template("simulate.v1")
    prompts = ["The wizard walked into the old town", "He sold apples at the market near the river bank every", "In 1854 the railway reached the"]
    requests = [
        LlmRequest(f"s-{i}", "simulate", template.messages(token='" magic"', explanation="The head is active when a wizard is mentioned.",
                                                           prompt=snippet(p, " magic", 300)), 3)
        for i, p in enumerate(prompts)
    ]
    got = {r.key: a for r, a in backend.run(requests, lambda: True)}
    enc = backend._encode(requests)
    with torch.no_grad():
        probs = backend.lm(**enc).logits[:, -1].float().softmax(-1)
    for request, row in zip(requests, probs):
        mass = {r: float(row[backend.rating_ids[r]].sum()) for r in RATINGS}
        expected = sum(int(r) * p for r, p in mass.items()) / sum(mass.values())
        answer = got[request.key]
        assert answer.status == "ok" and 0.0 <= answer.rating <= 9.0
        assert answer.rating == pytest.approx(expected, abs=1e-3), request.key
