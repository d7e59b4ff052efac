"""fairseq checkpoints from before its move to hydra (0.6.1 to 0.9, and the language models
fairseq published): the training options as an ``argparse.Namespace`` under ``args`` and no
``cfg``. :func:`config_from_args` gives them the ``cfg`` fairseq's own loader gives them
(``checkpoint_utils._upgrade_state_dict``, which runs ``convert_namespace_to_omegaconf``),
with one-line errors where that cannot work. Reading them at all needs the allow-list of
:mod:`.pickle_allowlist`; the state dict's old key layouts are the model's business
(``upgrade_dense_state`` of the FLOP model that converts the arch)."""

import argparse
import warnings

from .checkpoint import CheckpointError


def config_from_args(state: dict, path: str) -> dict:
    """``state`` (a checkpoint with ``args`` and no ``cfg``) upgraded as fairseq upgrades it on load,
    now with a ``cfg`` whose ``model`` names the arch; a :class:`CheckpointError` for ``args``
    that name no model fairseq knows."""
    from fairseq import checkpoint_utils
    from fairseq.models import ARCH_CONFIG_REGISTRY, ARCH_MODEL_REGISTRY

    from .. import models  # noqa: F401  (the FLOP archs, as with --user-dir)

    args = state["args"]
    if not isinstance(args, argparse.Namespace):
        raise CheckpointError(f"{path}: 'args' is a {type(args).__name__}, not the argparse.Namespace of a "
                              "pre-hydra fairseq checkpoint, and there is no 'cfg'")
    arch = getattr(args, "arch", None)
    if not arch:
        raise CheckpointError(f"{path}: a pre-hydra checkpoint whose args name no model (no 'arch' in its "
                              "argparse.Namespace): not a model checkpoint fairseq can rebuild")
    if arch not in ARCH_MODEL_REGISTRY:
        raise CheckpointError(f"{path}: arch '{arch}' is not a model fairseq {_fairseq_version()} knows "
                              "(trained with another project's --user-dir?)")
    try:
        with warnings.catch_warnings():  # hydra's deprecation warnings about fairseq's own compose call
            warnings.simplefilter("ignore")
            # what fairseq's pre-hydra build_model ran first: the arch's defaults, which also read the
            # options later releases renamed (transformer_lm's no_tie_adaptive_proj, decoder_final_norm)
            # and which the conversion to a config would drop
            ARCH_CONFIG_REGISTRY[arch](args)
            return checkpoint_utils._upgrade_state_dict(state)
    except Exception as e:  # fairseq's upgrade raises whatever the missing option gives
        first = str(e).splitlines()[0] if str(e) else ""
        raise CheckpointError(f"{path}: the pre-hydra args of arch '{arch}' do not convert to a fairseq "
                              f"config: {type(e).__name__}: {first}")


def _fairseq_version() -> str:
    import fairseq

    return getattr(fairseq, "__version__", "")
