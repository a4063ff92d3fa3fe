"""Reports from run records: tables, figures and REPRODUCTION.md (``python -m qtha.report``).

``records`` loads and checks the JSON records, ``tables`` aggregates over seeds and renders,
``figures`` plots, ``counts`` gives exact 7B parameter counts, ``claims`` judges the paper's claims by
the comparisons ``claims.yaml`` declares.
"""
