"""`make bench` (`python -m vbon_exp.bench`, `scripts/bench.py`): throughput of vbon_exp's sampler, RL steps and
reference cache against the usual baselines, on the CPU (default) or a CUDA GPU, printed as a table and written to
outputs/bench/summary.json. Benchmarks are not tests: nothing here asserts a time.

One module per section: `sampler` (ours against transformers.generate), `rl` (an RLOO step against TRL's, a PPO
step), `cache` (a reference cache's bytes, memory and rate), `busy` (the sampler and the RLOO step beside a busy
core, at `threads: auto` and at 2 threads), `vllm` (the vLLM sampler on a GPU); `timing` re-times a section that other
processes disturbed, `report` judges the targets and prints the table, `cli` runs it all. Models are random GPT-2s
(no hub): `scale.Scale` holds their sizes and the workload, `--toy` a smoke-test scale of all of it."""
