"""Training on 1..N processes with Accelerate: the optimizer and schedule, the resumable
state, the run folder's lifecycle, the loop, and evaluation (the final test evaluation runs
inside a training run). Imports core, config, data and model."""
