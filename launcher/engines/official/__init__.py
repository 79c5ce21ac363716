"""The official InternVL trainer (`model.engine=internvl_official`): the user's checkout, run
from a copy in the run dir with the edits the hardware needs (`edits`), in its own env
(`engine`), judged from its HF-Trainer log (`judge`)."""
