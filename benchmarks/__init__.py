"""Speed benchmarks: minigpt_lib against peer GPT-2 implementations, measured in one process and one run."""
