"""Ray Serve deployments and the HTTP ingress; imported only by entry points."""
