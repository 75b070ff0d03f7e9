"""Statistics every stage shares: the paired bootstrap over (prompt, seed) units, its constants and the one sign
flip for lower-is-better metrics (bootstrap.py), and the one unbiased MMD^2 estimator (mmd.py)."""
