"""What every connector run loads before it does any work: the benchmark runs this module alone
to measure the interpreter's and the imports' share of a run's time, CPU and memory."""

import connector.app
import connector.cli
import connector.engine  # noqa: F401
