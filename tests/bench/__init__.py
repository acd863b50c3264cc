"""`make bench`: the gateway's performance measured as ratios against baselines in the same run.

Not collected by pytest (no `test_*.py` here); `python -m tests.bench [--smoke]` runs it.
"""
