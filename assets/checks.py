"""Asset checks: one Dagster check per ``Check`` named in a step's registry row (``pipeline.steps.STEPS``),
run on one partition right after its asset is written (docs/quality.md)."""

import inspect

import dagster as dg

from lookups.pipeline.steps import STEPS, Check, Step

from .automation import CHECK_WITH_ITS_ASSET, lookups_partitions
from .resources import LookupsStore


def build_check(step: Step, spec: Check) -> dg.AssetChecksDefinition:
    """The Dagster check of one partition of ``step``'s asset, run right after that partition is written (also
    when the automation requests the asset: the assets after it wait for the blocking checks). A blocking
    check's failure is an error; the others warn."""
    severity = dg.AssetCheckSeverity.ERROR if spec.blocking else dg.AssetCheckSeverity.WARN

    def check(context: dg.AssetCheckExecutionContext, store: LookupsStore, **handle) -> dg.AssetCheckResult:
        outcome = spec.evaluate(handle[step.name], store.run_store(context.run), context.run.run_id)
        result = outcome.result
        # The terminal shows one line per log message: one per failure, so that its reason (an empty split, a
        # tolerance, and what to change) is read there, not only in the UI.
        for line in result.lines():
            (context.log.error if spec.blocking else context.log.warning)(f"{spec.name} failed: {line}")
        metadata = {"rows": result.rows, "expectations": result.evaluated, "summary": dg.MetadataValue.md(result.summary())}
        if result.failures:
            metadata["failures"] = dg.MetadataValue.json(result.failures)
        return dg.AssetCheckResult(passed=result.success, severity=severity, metadata={**metadata, **outcome.metadata})

    # The checked asset's output is loaded as the parameter named after it.
    check.__signature__ = inspect.Signature([
        inspect.Parameter("context", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=dg.AssetCheckExecutionContext),
        inspect.Parameter(step.name, inspect.Parameter.POSITIONAL_OR_KEYWORD),
        inspect.Parameter("store", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=LookupsStore),
    ])
    check.__name__ = spec.name
    return dg.asset_check(
        asset=step.name, name=spec.name, blocking=spec.blocking, description=spec.description, partitions_def=lookups_partitions,
        automation_condition=CHECK_WITH_ITS_ASSET,
    )(check)


ALL_CHECKS = [build_check(step, spec) for step in STEPS.values() for spec in step.checks]
