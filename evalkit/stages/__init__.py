"""The stages that compute: render (stage 1), score (stage 2: per-image values, set-metric features and targets,
the set_scores table, summary.json), and the executors they run on (this process, or Ray)."""
