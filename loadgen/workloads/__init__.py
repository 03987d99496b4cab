"""Realistic workloads for the load test: multi-turn conversations, shared prefixes, trace
replay, dataset files, and their run figures. One module per workload kind; see docs/loadtest.md."""
