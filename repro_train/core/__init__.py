"""Layer 0: typed config machinery, the name registry, text decoding, seeds, timing, redaction. Imports nothing of
repro_train."""
