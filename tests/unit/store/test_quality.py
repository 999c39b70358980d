"""Great Expectations suites catch what they claim to (no model)."""

import duckdb
import numpy as np
import pandas as pd
import pytest

from lookups.pipeline.store import explanation_suites, head_suites, input_suites, quality, reference_suites
from lookups.pipeline.store.sql_files import sql_text, sql_with_parameters


def exemplar_frame():
    return pd.DataFrame(
        {
            "model_id": "m", "prompt_set_id": "p", "layer": [1, 1, 2], "neuron": [5, 5, 7], "doc_id": ["a", "b", "a"],
            "doc_max_act": [2.0, 1.5, 3.0], "prompt_act": [1.8, 1.5, 2.7], "act_ratio": [0.9, 1.0, 0.9],
            "prompt_n_tokens": [3, 10, 99], "prompt_start": [7, 0, 1], "doc_max_pos": [9, 9, 99],
        }
    )


def run(frame):
    return quality.validate(input_suites.exemplar_check_frame(frame), "neuron_exemplars", input_suites.exemplars_suite(0.8, 100))


def failed(outcome):
    return {(f["expectation"], f["kwargs"].get("column") or str(f["kwargs"].get("column_list"))) for f in outcome.failures}


def test_clean_exemplars_pass():
    outcome = run(exemplar_frame())
    assert outcome.success, outcome.summary()


def test_duplicates_infinities_low_ratios_long_prompts_and_wrong_ends_fail():
    frame = exemplar_frame()
    frame.loc[1, "doc_id"] = "a"  # duplicate key
    frame.loc[0, "prompt_act"] = np.inf
    frame.loc[2, "act_ratio"] = 0.5
    frame.loc[2, "prompt_n_tokens"] = 100
    outcome = run(frame)
    assert not outcome.success
    kinds = failed(outcome)
    assert ("expect_compound_columns_to_be_unique", str(["model_id", "prompt_set_id", "layer", "neuron", "doc_id"])) in kinds
    assert ("expect_column_values_to_be_between", "prompt_act") in kinds
    assert ("expect_column_values_to_be_between", "act_ratio") in kinds
    assert ("expect_column_values_to_be_between", "prompt_n_tokens") in kinds
    assert ("expect_column_values_to_be_in_set", "ends_at_max") in kinds  # row 2 now ends at 100, not 99


def catalog_rows():
    return pd.DataFrame(
        {
            "model_id": "m", "layer": [1, 1, 1], "neuron": [0, 1, 2], "score": [3.0, 0.5, 1.0], "zscore": [9.0, 1.0, 2.0],
            "vocab_mean": 0.0, "vocab_std": 1.0, "vocab_skew": [4.0, -3.0, 0.1], "vocab_kurtosis": [30.0, 12.0, 0.5],
            "bottom_score": [-0.5, -4.0, -1.0], "role": ["prediction", "suppression", "other"], "selected": [True, True, False],
        }
    )


def test_neuron_catalog_roles_and_moments():
    suite = input_suites.neuron_catalog_suite(2)
    assert quality.validate(input_suites.neuron_check_frame(catalog_rows()), "neurons", suite).success
    broken = catalog_rows()
    broken.loc[0, "role"] = "suppression"  # a suppression neuron with a positive skew
    broken.loc[1, "vocab_kurtosis"] = 5.0  # skew -3 needs excess kurtosis >= 7 (Pearson's inequality)
    broken.loc[2, "role"] = "predictor"
    broken.loc[2, "bottom_score"] = 2.0  # above the top score
    kinds = failed(quality.validate(input_suites.neuron_check_frame(broken), "neurons", suite))
    assert ("expect_column_values_to_be_in_set", "role_matches_skew") in kinds
    assert ("expect_column_values_to_be_in_set", "moments_possible") in kinds
    assert ("expect_column_values_to_be_in_set", "role") in kinds
    assert ("expect_column_pair_values_a_to_be_greater_than_b", "None") in kinds


def test_coverage_warns_below_the_share():
    frame = pd.DataFrame({"n_exemplars": [3, 0, 0, 2]})
    assert not quality.validate(frame, "c", input_suites.coverage_suite(0.8)).success
    assert quality.validate(frame, "c", input_suites.coverage_suite(0.5)).success


def decomposition_frame():
    return pd.DataFrame(
        {
            "model_id": "m", "prompt_set_id": "p", "layer": [2, 2], "neuron": [7, 7], "doc_id": ["a", "b"],
            "pre_in": [1.0, -0.5], "sum_in": [1.0, -0.5], "act": [0.8, -0.1], "identity_abs_error": [1e-7, 2e-7], "identity_rel_error": [1e-8, 3e-8],
        }
    )


def _exemplar(row) -> str:
    return f"neuron {row['layer']}:{row['neuron']} on document {row['doc_id']}"


def test_attribution_identity_fails_above_the_tolerance_in_one_line_that_names_the_worst_exemplar():
    identity = head_suites.ATTRIBUTION_IDENTITY
    assert quality.validate(decomposition_frame(), "d", head_suites.attribution_identity_suite()).success
    assert quality.validate(identity.reasons(decomposition_frame(), 1e-3, "exemplars", _exemplar), "d", identity.suite()).success
    broken = decomposition_frame()
    broken.loc[1, "identity_rel_error"] = 2e-3  # a decomposition that misses its pre-activation
    outcome = quality.validate(identity.reasons(broken, 1e-3, "exemplars", _exemplar), "d", identity.suite())
    assert not outcome.success and [f["expectation"] for f in outcome.failures] == ["expect_column_values_to_be_null"]
    (line,) = outcome.failures[0]["sample"]
    assert line.startswith("1 of 2 exemplars miss the neuron's pre-activation by more than head_attributions.identity_tolerance (0.001) of their")
    assert "worst: neuron 2:7 on document b, 0.002 (2e-07 absolute)." in line and "docs/quality.md#tolerances" in line and "\n" not in line
    broken.loc[0, "identity_rel_error"] = float("nan")  # not a number is not within any tolerance
    assert "2 of 2 exemplars" in quality.validate(identity.reasons(broken, 1e-3, "exemplars", _exemplar), "d", identity.suite()).failures[0]["sample"][0]


def test_head_rows_from_later_layers_and_bad_fractions_fail():
    heads = pd.DataFrame(
        {"model_id": "m", "prompt_set_id": "p", "layer": [2, 2], "neuron": [7, 7], "doc_id": "a", "head_layer": [1, 3], "head": [0, 0],
         "in_contribution": [0.1, 0.2], "score": [0.1, 0.2]}
    )
    outcome = quality.validate(heads, "h", head_suites.head_attributions_suite())
    assert ("expect_column_pair_values_a_to_be_greater_than_b", "None") in failed(outcome)
    scores = pd.DataFrame(
        {"model_id": "m", "prompt_set_id": "p", "layer": 2, "neuron": 7, "head_layer": [0, 1], "head": [0, 0], "mean_score": [1.0, 0.5],
         "std_score": [0.1, 0.1], "active_fraction": [0.5, 1.5], "heldout_active_fraction": [0.5, None], "rank": [1, 1], "n_prompts": [8, 8]}
    )
    kinds = failed(quality.validate(scores, "s", head_suites.head_scores_suite()))
    assert ("expect_column_values_to_be_between", "active_fraction") in kinds
    assert ("expect_compound_columns_to_be_unique", str(["model_id", "prompt_set_id", "layer", "neuron", "rank"])) in kinds


# ---------------------------------------------------------------- referential integrity (sql/checks/references_*.sql)
M, P = "m@1", "ps-1"


def insert(con, table: str, **columns):
    names = ", ".join(columns)
    con.execute(f"INSERT INTO {table} ({names}) VALUES ({', '.join('?' for _ in columns)})", list(columns.values()))


@pytest.fixture
def db():
    """A consistent little database: one model, neurons 1/5 (selected) and 1/6 (random baseline) and 1/9 (neither),
    two documents, exemplars, attributions, scores with one consistent pair, an ablation, explanations, scores."""
    con = duckdb.connect()
    con.execute(sql_text("schema.sql"))
    facts = dict(n_layers=2, n_heads=2, n_kv_heads=2, d_model=8, d_head=4, d_mlp=16, d_vocab=50, n_ctx=64, bos_token_id=0)
    insert(con, "models", model_id=M, name="m", origin="local", fingerprint="1", act_fn="gelu", mlp_kind="ungated", normalization="LN", **facts)
    for neuron, selected, random in ((5, True, False), (6, False, True), (9, False, False)):
        insert(
            con, "neurons", model_id=M, layer=1, neuron=neuron, token_id=3, token=" x", score=1.0, zscore=2.0, vocab_mean=0.0, vocab_std=1.0,
            top_token_ids=[3], top_tokens=[" x"], top_scores=[1.0], qualifies=True, layer_rank=1, selected=selected, random_baseline=random,
            vocab_skew=2.0, vocab_kurtosis=9.0, bottom_token_id=4, bottom_token=" y", bottom_score=-0.5, role="prediction",
        )
    insert(
        con, "prompt_sets", prompt_set_id=P, source="s", corpus_hash="h", settings="{}", n_documents=2, n_explain=1, n_heldout=1,
        source_documents=2, duplicates_dropped=0, beyond_slice=0, skipped_empty=0, skipped_undecodable=0, skipped_malformed=0,
    )
    for i, (doc, split) in enumerate((("a", "explain"), ("b", "heldout"))):
        insert(con, "documents", prompt_set_id=P, doc_id=doc, doc_index=i, source_id=doc, passage_index=0, split=split, text="t", n_chars=1)
    for neuron in (5, 6):
        for doc, split in (("a", "explain"), ("b", "heldout")):
            insert(
                con, "neuron_exemplars", model_id=M, prompt_set_id=P, layer=1, neuron=neuron, doc_id=doc, split=split, rank=1, doc_max_act=1.0,
                doc_max_pos=0, window_start=0, prompt_start=0, prompt_n_tokens=1, prompt_token_ids=[3], prompt_text="t", prompt_act=1.0,
                act_ratio=1.0, next_token_id=3, next_token=" x",
            )
            for head in (0, 1):
                insert(
                    con, "head_attributions", model_id=M, prompt_set_id=P, layer=1, neuron=neuron, doc_id=doc, split=split, head_layer=0, head=head,
                    in_contribution=0.1, score=0.1, active=head == 0,
                )
        for head in (0, 1):
            insert(
                con, "head_neuron_scores", model_id=M, prompt_set_id=P, layer=1, neuron=neuron, head_layer=0, head=head, n_prompts=1, mean_score=0.1,
                std_score=0.0, mean_in=0.1, active_count=1, active_fraction=1.0, rank=head + 1, consistent=head == 0, heldout_n_prompts=1,
                heldout_active_count=1, cohort="next_token" if neuron == 5 else "random",
            )
    insert(
        con, "head_ablations", model_id=M, prompt_set_id=P, layer=1, neuron=5, doc_id="a", split="explain", head_layer=0, head=0, active=True,
        clean_act=1.0, ablated_act=0.5, act_drop=0.5, clean_prob=0.2, ablated_prob=0.1, prob_drop=0.1,
    )
    for position in (0, 1):
        insert(
            con, "head_lookups", model_id=M, prompt_set_id=P, cohort="next_token", layer=1, neuron=5, head_layer=0, head=0, doc_id="a",
            split="explain", active=True, position=position, distance=1 - position, token_id=3, token=" x", attention=0.5, in_contribution=0.05,
            contribution=0.05, share=0.5, rank=position + 1, head_score=0.1, identity_abs_error=0.0, identity_rel_error=0.0,
            attribution_abs_error=0.0, attribution_rel_error=0.0,
        )
    lookup(con, "a", position=1)
    for kind in ("truncated", "untruncated"):
        insert(
            con, "lookup_knockouts", model_id=M, prompt_set_id=P, cohort="next_token", layer=1, neuron=5, head_layer=0, head=0, doc_id="a",
            split="explain", prompt_kind=kind, site="lookup", knocked_head=0, position=1, distance=0, attention=0.5, clean_act=1.0,
            knocked_act=0.2, act_drop=0.8, clean_score=0.1, knocked_score=0.0, score_drop=0.1, score_drop_share=1.0, clean_prob=0.2,
            knocked_prob=0.1, prob_drop=0.1,
        )
    for side, component in (("query", "embed"), ("key", "embed")):
        insert(
            con, "qk_attributions", model_id=M, prompt_set_id=P, cohort="next_token", layer=1, neuron=5, head_layer=0, head=0, doc_id="a",
            split="explain", active=True, position=1, lookup_rank=1, token_id=3, attention=0.5, score=1.0, margin=0.5, side=side,
            component=component, term=1.0, share=1.0, rank=1, identity_abs_error=0.0, identity_rel_error=0.0, attention_abs_error=0.0,
        )
    for explanation_id, neuron, cohort in (("x5", 5, "next_token"), ("x6", 6, "random")):
        explanation(con, explanation_id, neuron, 0, cohort)
        score(con, explanation_id, neuron, 0)
    yield con
    con.close()


def explanation(con, explanation_id, neuron, head, cohort, explainer="contrastive"):
    insert(
        con, "explanations", explanation_id=explanation_id, model_id=M, prompt_set_id=P, explainer=explainer, backend="contrastive",
        template_version="log-odds", cohort=cohort, layer=1, neuron=neuron, head_layer=0, head=head, token=" x", status="ok", explanation="e",
        n_active_shown=1, n_inactive_shown=1, prompt_tokens=0, completion_tokens=0, cached=False,
    )


def score(con, explanation_id, neuron, head, baseline="none"):
    insert(
        con, "explanation_scores", explanation_id=explanation_id, scorer="detection", split="heldout", baseline=baseline, model_id=M,
        prompt_set_id=P, explainer="contrastive", cohort="next_token", layer=1, neuron=neuron, head_layer=0, head=head, target_layer=1,
        target_neuron=neuron, target_head_layer=0, target_head=head, status="scored", n_positive=1, n_negative=1, n_answered=2, n_malformed=0,
        n_errors=0, tp=1, fn=0, tn=1, fp=0, e_score=1.0,
    )


def references(con, table):
    sql, params = sql_with_parameters(f"checks/references_{table}", model_id=M, prompt_set_id=P, explainers=["contrastive"])
    frame = con.execute(sql, params).df()
    return frame, reference_suites.validate_references(frame, table)


def lookup(con, doc_id, position, site="lookup"):
    insert(
        con, "lookup_interventions", model_id=M, prompt_set_id=P, cohort="next_token", layer=1, neuron=5, head_layer=0, head=0, doc_id=doc_id,
        split="explain", site=site, position=position, distance=0, original_token_id=3, n_substitutes=4, clean_act=1.0, substituted_act=0.2,
        act_drop=0.8, clean_score=0.1, substituted_score=0.0, score_drop=0.1, score_drop_share=1.0, clean_prob=0.2, substituted_prob=0.1,
        prob_drop=0.1,
    )


def orphans(outcome, column):
    """The failure samples (the child rows' keys) of the in-set expectation on a reference column."""
    found = [f for f in outcome.failures if f["expectation"] == "expect_column_values_to_be_in_set" and f["kwargs"]["column"] == column]
    assert found, outcome.summary()
    return found[0]["sample"]


def test_every_reference_query_passes_on_consistent_rows(db):
    for table, columns in reference_suites.REFERENCES.items():
        frame, outcome = references(db, table)
        assert len(frame) > 0, table  # the fixture has rows for every child table: an empty join would prove nothing
        assert set(columns) <= set(frame.columns), table
        assert outcome.success, outcome.summary()
        assert outcome.evaluated == 2 * len(columns)


def test_reference_queries_take_only_the_parameters_they_use():
    sql, params = sql_with_parameters("checks/references_neurons", model_id=M, prompt_set_id=P, explainers=["contrastive"])
    assert params == {"model_id": M} and "$model_id" in sql
    with pytest.raises(ValueError, match="explainers"):
        sql_with_parameters("checks/references_explanations", model_id=M, prompt_set_id=P)


def test_an_exemplar_of_a_missing_or_unchosen_neuron_and_of_a_missing_document_fails(db):
    db.execute("DELETE FROM head_attributions WHERE neuron = 6")
    db.execute("DELETE FROM neurons WHERE neuron = 6")  # neuron 6's exemplars are orphans now
    insert(
        db, "neuron_exemplars", model_id=M, prompt_set_id=P, layer=1, neuron=9, doc_id="zz", split="explain", rank=1, doc_max_act=1.0,
        doc_max_pos=0, window_start=0, prompt_start=0, prompt_n_tokens=1, prompt_token_ids=[3], prompt_text="t", prompt_act=1.0,
        act_ratio=1.0, next_token_id=3, next_token=" x",
    )  # neuron 9 is neither selected nor a random baseline, and document zz does not exist
    _, outcome = references(db, "neuron_exemplars")
    assert not outcome.success
    missing = orphans(outcome, "neuron_found")
    assert {(r["layer"], r["neuron"], r["doc_id"]) for r in missing} == {(1, 6, "a"), (1, 6, "b")}
    assert [(r["neuron"], r["doc_id"]) for r in orphans(outcome, "neuron_chosen")] == [(6, "a"), (6, "b"), (9, "zz")]
    assert [(r["neuron"], r["doc_id"]) for r in orphans(outcome, "document_found")] == [(9, "zz")]
    assert all(r["model_id"] == M and r["prompt_set_id"] == P for r in missing)  # the full child key


def test_orphan_attributions_scores_and_neurons_fail(db):
    db.execute("DELETE FROM neuron_exemplars WHERE neuron = 5 AND doc_id = 'b'")
    _, outcome = references(db, "head_attributions")
    assert {(r["neuron"], r["doc_id"], r["head"]) for r in orphans(outcome, "exemplar_found")} == {(5, "b", 0), (5, "b", 1)}
    db.execute("UPDATE neurons SET selected = false WHERE neuron = 5")
    _, outcome = references(db, "head_neuron_scores")
    assert {(r["neuron"], r["head"]) for r in orphans(outcome, "neuron_chosen")} == {(5, 0), (5, 1)}
    db.execute("DELETE FROM models")
    frame, outcome = references(db, "neurons")
    assert len(orphans(outcome, "model_found")) == 3 and outcome.failures[0]["unexpected_count"] == 3
    db.execute("DELETE FROM prompt_sets")
    _, outcome = references(db, "documents")
    assert {r["doc_id"] for r in orphans(outcome, "prompt_set_found")} == {"a", "b"}


def test_an_ablation_of_an_inconsistent_pair_or_off_the_exemplars_fails(db):
    insert(
        db, "head_ablations", model_id=M, prompt_set_id=P, layer=1, neuron=5, doc_id="zz", split="explain", head_layer=0, head=1, active=False,
        clean_act=1.0, ablated_act=0.5, act_drop=0.5, clean_prob=0.2, ablated_prob=0.1, prob_drop=0.1,
    )  # head 1 is not consistent for neuron 5; zz is no exemplar
    _, outcome = references(db, "head_ablations")
    assert [(r["head"], r["doc_id"]) for r in orphans(outcome, "pair_consistent")] == [(1, "zz")]
    assert [(r["head"], r["doc_id"]) for r in orphans(outcome, "exemplar_found")] == [(1, "zz")]
    assert not any(f["kwargs"]["column"] == "pair_found" for f in outcome.failures)  # the pair itself exists


def test_an_explanation_of_an_inconsistent_or_missing_pair_fails(db):
    explanation(db, "x-bad", 5, 1, "next_token")  # (1/5, 0/1) is recorded but not consistent
    explanation(db, "x-none", 5, 7, "next_token")  # no such head
    explanation(db, "x-cohort", 6, 0, "next_token")  # neuron 6's pairs are of the random cohort
    explanation(db, "x-other", 5, 7, "next_token", explainer="local:old")  # another explainer: not this run's, left out
    _, outcome = references(db, "explanations")
    assert not outcome.success
    assert {r["explanation_id"] for r in orphans(outcome, "pair_consistent")} == {"x-bad", "x-none"}
    assert [r["explanation_id"] for r in orphans(outcome, "pair_found")] == ["x-none"]
    assert [r["explanation_id"] for r in orphans(outcome, "cohort_matches")] == ["x-none", "x-cohort"]


def test_a_score_of_a_missing_explanation_or_another_pair_fails(db):
    score(db, "x-gone", 5, 0)  # no such explanation
    score(db, "x5", 6, 0, baseline="shuffled")  # explanation x5 is of neuron 5, not 6
    _, outcome = references(db, "explanation_scores")
    assert [r["explanation_id"] for r in orphans(outcome, "explanation_found")] == ["x-gone"]
    assert {(r["explanation_id"], r["neuron"]) for r in orphans(outcome, "pair_matches")} == {("x-gone", 5), ("x5", 6)}


def test_a_missing_reference_column_fails():
    frame = pd.DataFrame({"explanation_id": ["a"], "explanation_found": [True]})  # a query that lost pair_matches
    outcome = reference_suites.validate_references(frame, "explanation_scores")
    assert not outcome.success and any("pair_matches" in f.get("error", "") for f in outcome.failures)


def test_merge_keeps_every_failure_and_its_suite():
    good = quality.SuiteResult("a", True, 3, [], 2)
    bad = quality.SuiteResult("b", False, 5, [{"expectation": "e", "kwargs": {}, "unexpected_count": 1, "sample": []}], 4)
    merged = quality.merge("ab", good, bad)
    assert (merged.success, merged.rows, merged.evaluated) == (False, 3, 6) and merged.failures[0]["suite"] == "b"
    assert quality.merge("aa", good, good, rows=9).success and quality.merge("aa", good, good, rows=9).rows == 9


# ---------------------------------------------------------------- suites of models, prompt_sets, ablation_tests, explanation_tests, llm_calls


def test_models_suite(db):
    frame = db.execute("SELECT * FROM models").df()
    assert quality.validate(frame, "models", input_suites.models_suite(rows=1)).success
    broken = pd.concat([frame, frame], ignore_index=True)  # duplicate model_id
    broken.loc[1, "d_mlp"] = 0
    broken.loc[0, "n_layers"] = np.nan
    kinds = failed(quality.validate(broken, "models", input_suites.models_suite(rows=1)))
    assert ("expect_column_values_to_be_unique", "model_id") in kinds
    assert ("expect_column_values_to_be_between", "d_mlp") in kinds
    assert ("expect_column_values_to_not_be_null", "n_layers") in kinds
    assert ("expect_table_row_count_to_equal", "None") in kinds
    assert not quality.validate(frame.iloc[:0], "models", input_suites.models_suite(rows=1)).success  # the model's row missing


def test_prompt_sets_suite(db):
    frame = db.execute("SELECT * FROM prompt_sets").df()
    assert quality.validate(input_suites.prompt_sets_check_frame(frame), "p", input_suites.prompt_sets_suite(rows=1)).success
    broken = pd.concat([frame, frame], ignore_index=True)
    broken.loc[1, "n_heldout"] = 5  # explain + heldout != documents
    broken.loc[0, "duplicates_dropped"] = -1
    kinds = failed(quality.validate(input_suites.prompt_sets_check_frame(broken), "p", input_suites.prompt_sets_suite()))
    assert ("expect_column_values_to_be_unique", "prompt_set_id") in kinds
    assert ("expect_column_values_to_be_in_set", "splits_add_up") in kinds
    assert ("expect_column_values_to_be_between", "duplicates_dropped") in kinds


def ablation_tests_frame():
    return pd.DataFrame(
        {
            "model_id": M, "prompt_set_id": [P, P, "ps-2"], "metric": ["act_drop", "prob_drop", "act_drop"], "n_active": [4, 4, 0], "n_inactive": [3, 3, 2],
            "mean_active": [0.5, 0.1, np.nan], "mean_inactive": [0.1, 0.0, 0.2], "median_active": [0.5, 0.1, np.nan], "median_inactive": [0.1, 0.0, 0.2],
            "ks_statistic": [0.75, 0.5, np.nan], "p_value": [0.03, 0.4, np.nan],  # no active prompt: no test (not an error)
        }
    )


def test_ablation_tests_suite():
    run_tests = lambda f: quality.validate(head_suites.ablation_tests_check_frame(f), "t", head_suites.ablation_tests_suite())  # noqa: E731
    assert run_tests(ablation_tests_frame()).success, run_tests(ablation_tests_frame()).summary()
    broken = ablation_tests_frame()
    broken.loc[1, "p_value"] = 1.5
    broken.loc[0, "mean_inactive"] = np.inf
    broken.loc[0, "ks_statistic"] = np.nan  # both groups exist: the test must have run
    broken.loc[2, "metric"] = "prob_drop"
    broken.loc[2, "prompt_set_id"] = P  # duplicate key
    broken.loc[2, "n_inactive"] = -1
    kinds = failed(run_tests(broken))
    assert ("expect_column_values_to_be_between", "p_value") in kinds
    assert ("expect_column_values_to_be_between", "mean_inactive") in kinds
    assert ("expect_column_values_to_be_in_set", "stats_present") in kinds
    assert ("expect_compound_columns_to_be_unique", str(["model_id", "prompt_set_id", "metric"])) in kinds
    assert ("expect_column_values_to_be_between", "n_inactive") in kinds


def explanation_tests_frame():
    from lookups.pipeline.llm.significance import TEST_COLUMNS

    frame = pd.DataFrame(
        {
            "explainer": "contrastive", "scorer": "detection", "measure": "e_score", "baseline": ["random_neurons", "shuffled"], "chance": 0.5,
            "n": [9, 9], "mean": 0.7, "ci_low": 0.6, "ci_high": 0.8, "std": 0.1, "skew": -0.5, "skew_z": -1.2, "skew_p": 0.23,
            "n_baseline": [3, 0], "mean_baseline": [0.5, np.nan], "baseline_ci_low": [0.45, np.nan], "baseline_ci_high": [0.55, np.nan],
            "std_baseline": [0.05, np.nan], "difference": [0.2, np.nan], "difference_ci_low": [0.1, np.nan], "difference_ci_high": [0.3, np.nan],
            "permutation_p": [0.01, np.nan], "mw_u": [20.0, np.nan], "mw_p": [0.04, np.nan], "n_paired": [np.nan, 0],
            "wilcoxon_w": np.nan, "wilcoxon_p": np.nan,
        }
    )
    return frame[TEST_COLUMNS].assign(model_id=M, prompt_set_id=P)


def test_explanation_tests_suite():
    run_tests = lambda f: quality.validate(explanation_suites.explanation_tests_check_frame(f), "t", explanation_suites.explanation_tests_suite())  # noqa: E731
    assert run_tests(explanation_tests_frame()).success, run_tests(explanation_tests_frame()).summary()
    broken = explanation_tests_frame()
    broken.loc[0, "mw_p"] = 1.5
    broken.loc[1, "skew_z"] = -np.inf
    broken.loc[0, "mean"] = np.nan  # nine pairs scored: the mean exists
    broken.loc[1, "baseline"] = "random_neurons"  # duplicate key
    broken.loc[1, "n"] = -1
    broken.loc[0, "permutation_p"] = -0.1
    kinds = failed(run_tests(broken))
    assert ("expect_column_values_to_be_between", "mw_p") in kinds
    assert ("expect_column_values_to_be_between", "skew_z") in kinds
    assert ("expect_column_values_to_be_between", "permutation_p") in kinds
    assert ("expect_column_values_to_be_in_set", "stats_present") in kinds
    assert ("expect_compound_columns_to_be_unique", str(["model_id", "prompt_set_id", "explainer", "scorer", "measure", "baseline"])) in kinds
    assert ("expect_column_values_to_be_between", "n") in kinds
    unknown = explanation_tests_frame().assign(measure="accuracy", scorer="vibes")
    assert {("expect_column_values_to_be_in_set", "measure"), ("expect_column_values_to_be_in_set", "scorer")} <= failed(run_tests(unknown))


def test_llm_calls_suite(db):
    for i, (status, purpose) in enumerate((("ok", "explain"), ("malformed", "classify"), ("error", "classify"))):
        insert(
            db, "llm_calls", cache_key=f"k{i}", run_id="r1", backend="local", llm_model="s", template_version="t@1", purpose=purpose, status=status,
            prompt_tokens=10, completion_tokens=2, seconds=0.5,
        )
    sql, params = sql_with_parameters("checks/llm_calls_of_run", run_id="r1", model_id=M)
    calls = db.execute(sql, params).df()
    assert len(calls) == 3 and quality.validate(calls, "llm_calls", explanation_suites.llm_calls_suite()).success
    broken = calls.copy()
    broken.loc[0, "status"] = "maybe"
    broken.loc[1, "cache_key"] = None
    broken.loc[2, "completion_tokens"] = -1
    kinds = failed(quality.validate(broken, "llm_calls", explanation_suites.llm_calls_suite()))
    assert ("expect_column_values_to_be_in_set", "status") in kinds
    assert ("expect_column_values_to_not_be_null", "cache_key") in kinds
    assert ("expect_column_values_to_be_between", "completion_tokens") in kinds
    assert len(db.execute(*sql_with_parameters("checks/llm_calls_of_run", run_id="r2")).df()) == 0


def test_a_lookup_of_an_unstored_attribution_and_an_intervention_at_an_unstored_position_fail(db):
    insert(
        db, "head_lookups", model_id=M, prompt_set_id=P, cohort="next_token", layer=1, neuron=5, head_layer=0, head=1, doc_id="zz",
        split="explain", active=True, position=0, distance=0, token_id=3, token=" x", attention=1.0, in_contribution=0.1,
        contribution=0.1, share=1.0, rank=1, head_score=0.1, identity_abs_error=0.0, identity_rel_error=0.0,
            attribution_abs_error=0.0, attribution_rel_error=0.0,
    )
    _, outcome = references(db, "head_lookups")
    assert [r["doc_id"] for r in orphans(outcome, "attribution_found")] == ["zz"]
    assert [r["head"] for r in orphans(outcome, "pair_consistent")] == [1]  # head 1 is not a consistent pair either
    lookup(db, "a", position=7, site="control")
    _, outcome = references(db, "lookup_interventions")
    assert [r["site"] for r in orphans(outcome, "lookup_found")] == ["control"]
