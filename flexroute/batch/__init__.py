"""``flexroute batch``: a Batch API input file through flexroute's engine, in minutes.

:func:`run_batch` reads OpenAI Batch API or Gemini batch lines (:mod:`.lines`), sends them
through the engine in this process or a running proxy (:mod:`.senders`) at a bounded
concurrency and pace (:mod:`.pacing`), writes each answer once in the provider's batch output
format (:mod:`.output`) and counts what happened (:mod:`.tally`).
"""

from flexroute.batch.runner import BatchOptions, run_batch
from flexroute.batch.tally import Tally

__all__ = ["BatchOptions", "Tally", "run_batch"]
