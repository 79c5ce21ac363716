"""Our InternVL chat finetune: model, data, trainer and tools (node side; imports torch lazily).

`python -m internvl_chat.train ARGS.json` trains; see docs/DESIGN.md for the contract.
"""
