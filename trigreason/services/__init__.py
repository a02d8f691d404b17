"""The services of the cluster (one folder each) and their shared runtime."""
