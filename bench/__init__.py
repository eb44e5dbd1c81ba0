"""The benchmark harness (``make bench``): not tests, and not part of the service."""
