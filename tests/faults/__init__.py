"""Fault suite: the real roles as processes, one injected fault each, the same invariants."""
