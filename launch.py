"""python launch.py [group=option ...] [key=value ...]

    python launch.py                                   # tiny InternVL finetune on this CPU
    python launch.py model=internvl_20b hw=a800 nodes=4 cluster=slurm dry_run=true run_dir=DIR
    python launch.py -m per_device_batch_size=1,2,4 gradient_accumulation_steps=4,8  # sweep
    python launch.py status|logs|cancel|report PATH...
    python launch.py resume RUN_DIR [key=value ...]    # continue from the newest checkpoint

Compose (Hydra) -> check -> plan -> write the run dir -> dispatch; see docs/DESIGN.md.
"""

from __future__ import annotations

import sys

VERBS = ("status", "logs", "cancel", "report")


def main() -> int:
    from launcher.node.nodecheck import alias

    argv = sys.argv[1:] = [alias(a) for a in sys.argv[1:]]  # preflight=true|false
    if argv and argv[0] == "resume":
        from launcher.submit.resume import main as resume_main

        return resume_main(argv[1:])
    if argv and argv[0] in VERBS:
        from launcher.submit.jobctl import main as jobctl_main

        return jobctl_main(argv)
    if any(a in ("-m", "--multirun") or a.startswith("-") for a in argv):
        # Hydra's own command line: sweeps (-m), --cfg, --help, ...
        from launcher.submit.sweep import hydra_main

        return hydra_main()
    from launcher.submit.pipeline import main as pipeline_main

    return pipeline_main(argv)


if __name__ == "__main__":
    sys.exit(main())
