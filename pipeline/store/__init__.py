"""The store layer: results as Parquet files with DuckDB views over them (``store``), the read-only query
command's engine (``queries``) and the data-quality suites the asset checks run (``quality``)."""
