"""The XTuner checkpoint exports behind xtuner_cfgs/to_hf.py: common, internvl, llava."""
