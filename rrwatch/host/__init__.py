"""RR host mode: the host's registration, BIRD's control socket, and the keeper of BIRD's
configuration."""
