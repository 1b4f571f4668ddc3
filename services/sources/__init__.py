"""Sources: turn fetched feed bytes and folder files into typed items (no network here)."""
