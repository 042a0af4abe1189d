"""The RL trainer: `train(cfg)` in loop.py; set-up in runtime.py; checkpoints and metrics beside it."""
