"""Wire protocols (KServe V1, Open Inference Protocol V2 with binary tensors, the repository API): codecs that
parse and validate a whole request into a typed value before any model lookup, and encode answers. They call
the data plane only; no torch here."""
