"""The trio side: the watcher and the model it feeds, the live policy, leadership, the
reconciler, the TLS keeper, and `run`, the composition root."""
