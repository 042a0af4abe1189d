"""`repro-train sft`: supervised training of the shipped tiny reasoner (an application of the
toy task, the tokenizer and the evaluation metrics).

    config.py  the recipe (recipes/toy/sft.yaml) and its checks
    train.py   data, model, the training loop, `main`
    report.py  held-out evaluation and RECORD.md
"""
