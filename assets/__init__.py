"""The Dagster layer: assets, checks, resources and the one Definitions (lookups.assets.definitions)."""

import warnings

import dagster as dg

# Output(data_version=...) is how an asset reports the version its inputs imply; Dagster marks it beta.
warnings.filterwarnings("ignore", category=dg.BetaWarning)
# Partitioned asset checks (one check per (model, corpus) partition) are a Dagster preview feature.
warnings.filterwarnings("ignore", category=dg.PreviewWarning)
