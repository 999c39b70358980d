"""The referential integrity of each table against its parents (docs/quality.md): the reference columns each
``sql/checks/references_<table>.sql`` returns (read by the store), and the suite that wants them all true."""

from __future__ import annotations

import pandas as pd

from lookups.pipeline.store.quality import SuiteResult, validate

#: Per child table, the boolean columns its ``sql/checks/references_<table>.sql`` returns: one per reference
#: (a parent row found, and where it matters the parent in the right state), each of which must be true.
REFERENCES = {
    "neurons": ("model_found",),
    "documents": ("prompt_set_found",),
    "neuron_exemplars": ("neuron_found", "neuron_chosen", "document_found"),
    "head_attributions": ("exemplar_found",),
    "head_neuron_scores": ("neuron_found", "neuron_chosen"),
    "head_ablations": ("pair_found", "pair_consistent", "exemplar_found"),
    "head_lookups": ("attribution_found", "pair_consistent"),
    "lookup_interventions": ("lookup_found",),
    "lookup_knockouts": ("lookup_found",),
    "qk_attributions": ("lookup_found",),
    "explanations": ("pair_found", "pair_consistent", "cohort_matches"),
    "explanation_scores": ("explanation_found", "pair_matches"),
}


def references_suite(columns) -> list:
    """Each reference column all true: a parent found for every child row (NULL counts as not found)."""
    import great_expectations as gx

    out = []
    for c in columns:
        out.append(gx.expectations.ExpectColumnValuesToNotBeNull(column=c))
        out.append(gx.expectations.ExpectColumnValuesToBeInSet(column=c, value_set=[True]))
    return out


def validate_references(frame: pd.DataFrame, table: str) -> SuiteResult:
    """Run ``references_suite`` on a references query's rows; a failure's sample is the orphan rows' keys."""
    columns = REFERENCES[table]
    keys = [c for c in frame.columns if c not in columns]
    return validate(frame, f"{table} references", references_suite(columns), index_columns=keys or None)
