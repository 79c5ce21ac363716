"""Stand-in for Ascend's torch_npu plugin, which cannot be installed on this machine.

The launcher only looks for it (launcher.plan.site's interpreter probe: does the nodes' python have
torch_npu for hw=ascend910b?); the fake MindSpeed-MM entry (tests/fakes/pretrain_internvl.py)
never imports it. Tests that plan a real Ascend submit put tests/fakes/python on PYTHONPATH.
"""
