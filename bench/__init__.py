"""The lab: benchmarks, demos and experiments, kept apart from the product packages.

Throughput (``difftune bench throughput``), the transfer and ControlNet-convergence benchmarks,
the library and service demos, and the service load benchmarks (``python -m bench.service``).
Nothing in contract, models, core, api or worker imports it (docs/ARCHITECTURE.md).
"""
