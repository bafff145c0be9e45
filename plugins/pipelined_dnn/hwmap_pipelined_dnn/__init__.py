"""hwmap target: a pipelined dataflow DNN architecture (chapter Section 3.5, Fig. 3.20)."""
