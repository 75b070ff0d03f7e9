"""The run folder: every path in it (caches included), atomic writes, the lock, integrity checks, and `ScoredRun`,
the one read model of a scored run."""
