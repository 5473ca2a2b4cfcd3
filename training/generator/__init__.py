"""The generator: a black-box ranker of retrieved candidates (prompt, parsing, backends)."""
