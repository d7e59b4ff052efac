"""``flop-user-dir``: prints the path to give fairseq's ``--user-dir``, wherever the package is installed;
``flop-user-dir --recipes``: the folder of the packaged ``fairseq-hydra-train`` configs."""

import argparse
import os

from ..plugin import user_dir_path


def recipes_path() -> str:
    """Absolute path of the installed recipes (``.../flop_fairseq/recipes``, package data)."""
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "recipes")


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="flop-user-dir",
        description="Print the directory to pass to fairseq's --user-dir, e.g. "
                    "fairseq-train --user-dir \"$(flop-user-dir)\" ...")
    parser.add_argument("--recipes", action="store_true",
                        help="print the folder of the fairseq-hydra-train configs instead: fairseq-hydra-train "
                             "--config-dir \"$(flop-user-dir --recipes)\" --config-name flop_transformer_lm_wiki103 "
                             "task.data=... checkpoint.finetune_from_model=... common.user_dir=\"$(flop-user-dir)\"")
    args = parser.parse_args(argv)
    print(recipes_path() if args.recipes else user_dir_path())


if __name__ == "__main__":
    main()
