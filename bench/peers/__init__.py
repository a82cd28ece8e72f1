"""Reference broadcast servers with Fanout's semantics, used for side-by-side runs."""
