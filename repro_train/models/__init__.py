"""Layer 1: the models. `forward` (packed batches, the log-prob forward every phase uses), `loading` (one resolver of
model paths and the loaders), `zoo` (pretrained models made offline by `repro-train prepare-model`)."""
