"""Throughput benchmarks: flaxae against PyTorch and Keras 3 (issue 6).

``python -m benchmarks.throughput`` runs every implementation, each in its own
subprocess, and writes a markdown table and a JSON file. See
``benchmarks/RESULTS.md`` for this machine's figures.
"""
