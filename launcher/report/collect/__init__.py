"""Pure log parsers: every log kind becomes one list of per-step records.

A record is a dict with `step` and whatever the log tells: loss, lr, epoch, grad_norm,
samples_per_sec, tokens_per_sec (whole job), step_time, data_time, tokens, image_tokens,
text_tokens, samples, peak_mem_gb, tflops (XTuner's own figure), tokens_per_sec_per_device
(XTuner's, text tokens only). Kinds: `metrics_jsonl` (ours, docs/DESIGN.md), `hf_trainer`
(HF-Trainer stdout) and `xtuner_vis` (XTuner vis_data JSON Lines).
"""

from launcher.report.collect.detect import detect, find_log, load
from launcher.report.collect.records import LogError, ParsedLog, final_loss

__all__ = ["LogError", "ParsedLog", "detect", "final_loss", "find_log", "load"]
