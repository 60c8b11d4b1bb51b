"""What runs on one machine for development: the local services, the demo, the edge deployment."""
