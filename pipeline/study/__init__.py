"""The whole study, on top of both halves: range-test sweep -> pick -> decay-grid sweep -> report.

The only room that imports both what produces runs (pipeline.train, pipeline.sweep) and what
reads them (analysis).
"""
