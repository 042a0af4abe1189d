"""`repro-train sft`: supervised training of the shipped tiny reasoner from scratch (an application of the toy task,
the tokenizer and the evaluation metrics), or fine-tuning of a pretrained model on prompt/response pairs (the thinker).

    config.py           the tiny reasoner's recipe (recipes/toy/sft.yaml) and its checks
    train.py            its data, model and training loop; `main` (picks the recipe kind)
    report.py           its held-out evaluation and RECORD.md
    batches.py          length-bucketed batches and the learning-rate schedule (both kinds)
    finetune_config.py  a pretrained model's recipe (recipes/thinker/sft.yaml) and its checks
    finetune.py         its data, packing into micro-batches, bf16 loop, saved folder and generation eval
"""
