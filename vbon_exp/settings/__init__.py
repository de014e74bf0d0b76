"""The run's settings: one dataclass per config node, its defaults, a comment per key and a `check` for its values.

Torch-free on purpose: a bad command line is answered before torch, transformers or pandas load (`python -m
vbon_exp objective.bnd=exact` fails in well under a second). Each module mirrors a config group or node: task,
objective (beta_n: the (β, N) axis every objective sits on), algo, train (train, sft, preference), model, reward,
sampling, reference, eval, wandb, run (seed, device, threads, paths). vbon_exp/config.py registers them with Hydra
and validates a composed config into one typed RunSettings; the components that do the work (vbon_exp/tasks,
vbon_exp/objectives, vbon_exp/trainers, ...) import their settings from here and register their implementation
under the same names (a test holds the names equal)."""
