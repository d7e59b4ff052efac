"""Where fairseq's ``--user-dir`` should point: :func:`user_dir_path` (``flop-user-dir`` prints it).

fairseq imports a user dir by putting its parent on ``sys.path`` and importing the folder by
its name, so the plugin sits alone in this folder under a name no other package uses.
"""

import os


def user_dir_path() -> str:
    """Absolute path of the installed ``--user-dir`` (``.../flop_fairseq/plugin/flop_fairseq_plugin``)."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "flop_fairseq_plugin")
