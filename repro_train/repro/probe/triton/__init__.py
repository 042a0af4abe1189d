"""The Triton side of the fused probe: `launch` (availability, launches), `attention` (the prefix attention),
`ops` (rotary, RMSNorm, the SiLU gate, answer log-probs), `jit` (the kernels themselves, imported on first use)."""
