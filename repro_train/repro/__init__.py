"""RePro (arXiv 2512.01925, docs/spec/repro-method.md): process rewards from the policy's own
confidence in the answer along its chain of thought.

The method, in the order a step runs it (read these to learn RePro; docs/repro.md explains each step):
    types.py      ProbeRequest, ProbeResult: what passes between the steps
    segment.py    the thinking span and its segments (spec 1-2)
    select.py     fork entropy and the top-k cuts (spec 3-4)
    probe/naive.py  the reference definition of J: one teacher-forced forward per cut (spec 5)
    scores.py     S_magn, S_stab, S, r, r', the token process advantage, the fold (spec 6-12)
    pipeline.py   RePro: plan -> policy_pass -> advantages for a batch; the trainer's hook
The probe runner (`probe/`, `ProbeRunner` set by `repro.probe.*`) computes the same J fast; nothing in the
method depends on how. config.py and presets.py hold the `repro:` options, mc.py the Monte-Carlo values.
"""
