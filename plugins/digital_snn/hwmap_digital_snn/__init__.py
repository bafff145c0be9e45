"""hwmap target ``digital_snn``: a single-population digital SNN inference device (the
chapter's Section 3.4.6, Figs. 3.14-3.15; SynSense's Xylo family is such a device)."""
