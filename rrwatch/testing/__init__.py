"""Local etcd, a test PKI and simulated clusters: for `rrwatch demo`, the tests and the
benchmarks; nothing here runs at import."""
