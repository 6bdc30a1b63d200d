"""The pure core: records, the model, the mesh rrwatch wants, plans, reachability, BIRD
configuration text and DOT. Only the standard library and attrs; no I/O, no clock."""
