"""How far bf16 J lands from float32 J, for the fused and the naive path, over seeds (one GPU).

    python bench/dj_seeds.py [--model 1.5b] [--length 4096] [--cuts 10] [--model-seeds 0,1] [--input-seeds 0,1,2,3]

For each (weights seed, inputs seed) cell of bench_probe.py: J from a float32 copy of the same
weights (fused path; it equals the naive path to 1e-5 in float32), the naive path in bf16, the
fused path in bf16 as it runs, and the fused path with the Triton RMSNorm on
(`Kernels.fused_rms_norm`, off by default). Prints
max |dJ| against float32 and against naive for each, then medians and worst cases. The question it
answers: is a max |J_fused - J_naive| above 2e-2 an error of the fused path, or bf16 rounding that
both paths carry?
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.bench_probe import MODELS, BenchOptions, build_model, make_blocks, make_inputs  # noqa: E402
from repro_train.repro.probe import ProbeRunner, ProbeSettings  # noqa: E402
from repro_train.repro.probe.attention import probe_cache  # noqa: E402
from repro_train.repro.probe.blocks import Blocks  # noqa: E402


def main(argv=None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="1.5b", choices=sorted(MODELS))
    p.add_argument("--length", type=int, default=4096)
    p.add_argument("--cuts", type=int, default=10)
    p.add_argument("--model-seeds", default="0,1")
    p.add_argument("--input-seeds", default="0,1,2,3")
    a = p.parse_args(argv)
    dev = torch.device("cuda")
    paths = {"fused": False, "fused, Triton RMSNorm": True}
    res = {k: [] for k in ("naive", *paths)}
    print(
        "| weights seed | inputs seed | naive vs fp32 | " + " | ".join(f"{k} vs fp32 / vs naive" for k in paths) + " |"
    )
    print("|---|---|---|" + "---|" * len(paths))
    for ms in (int(x) for x in a.model_seeds.split(",")):
        model = build_model(a.model, torch.bfloat16, dev, seed=ms)
        ref = copy.deepcopy(model).float()
        for s in (int(x) for x in a.input_seeds.split(",")):
            o = BenchOptions(seed=s)
            inp = make_inputs(model.config.vocab_size, a.length, o, dev)
            blocks = Blocks.from_lists(make_blocks(a.length, a.cuts, o), inp.answers, inp.forcing, 0, dev)
            sq = inp.seqs
            with torch.no_grad():

                def phase1(m, sq=sq):
                    return m(
                        input_ids=sq.input_ids,
                        attention_mask=sq.attention_mask,
                        position_ids=sq.position_ids,
                        use_cache=True,
                        past_key_values=probe_cache(0),
                        logits_to_keep=1,
                    ).past_key_values

                J32 = ProbeRunner().fused(ref, sq, phase1(ref), blocks)
                naive = ProbeRunner(ProbeSettings(impl="naive", batch_size=8)).naive(model, sq, blocks)
                cache = phase1(model)
                row = {"naive": ((naive - J32).abs().max().item(), 0.0)}
                for name, fused_rms in paths.items():
                    engine = ProbeRunner()
                    engine.kernels.fused_rms_norm = fused_rms
                    J = engine.fused(model, sq, cache, blocks)
                    row[name] = ((J - J32).abs().max().item(), (J - naive).abs().max().item())
            for k, v in row.items():
                res[k].append(v)
            print(
                f"| {ms} | {s} | {row['naive'][0]:.1e} | "
                + " | ".join(f"{row[k][0]:.1e} / {row[k][1]:.1e}" for k in paths)
                + " |",
                flush=True,
            )
        del model, ref
        torch.cuda.empty_cache()
    for k, v in res.items():
        print(
            f"{k}: max |dJ| vs fp32 median {statistics.median(x[0] for x in v):.1e}, worst {max(x[0] for x in v):.1e}"
            + (
                ""
                if k == "naive"
                else f"; vs naive median {statistics.median(x[1] for x in v):.1e}, "
                f"worst {max(x[1] for x in v):.1e}, above 2e-2 in {sum(x[1] > 2e-2 for x in v)} of {len(v)}"
            )
        )


if __name__ == "__main__":
    main()
