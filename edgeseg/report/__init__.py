"""``edgeseg report RUN_DIR``: measure every stage of a pipeline run and write the report with its figures."""
