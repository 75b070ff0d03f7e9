"""Minimum useful steps: the one decision (rule.py), the per-seed and distribution rules that supply its
evidence, the per-scheduler answer written to summary.json (answer.py), and the adaptive search."""
