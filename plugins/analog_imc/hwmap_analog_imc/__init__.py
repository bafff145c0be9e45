"""hwmap target: a multi-core analog in-memory-computing accelerator (chapter Section 3.4)."""
