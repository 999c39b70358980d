"""The store layer: results as Parquet files with DuckDB views over them (``store``; the SQL files and table keys in
``sql_files``, the warehouse's location and DuckDB connections in ``warehouse``, the steps' version records in
``asset_versions``), the read-only query command's engine (``queries``), and the data-quality validation (``quality``)
with the suites the asset checks run (``input_suites``, ``head_suites``, ``explanation_suites``, ``reference_suites``)."""
