"""Throughput and latency of aiotq against its peers and raw clients: ``make bench``.

``python -m benchmarks.run`` runs every scenario of every framework on every broker, each
measurement in its own process, and writes ``benchmarks/results/latest.md``.
"""
