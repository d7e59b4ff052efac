"""fairseq ``--user-dir user_dir`` from a checkout: the packaged plugin
(``flop_fairseq/plugin/flop_fairseq_plugin``, whose path ``flop-user-dir`` prints) under the
short name. It only imports what the plugin imports, so the two never register twice."""

from flop_fairseq.plugin.flop_fairseq_plugin import *  # noqa: F401,F403
