"""rrwatch keeps a Calico cluster's BGP route-reflector mesh right, from an etcd v3 datastore."""
