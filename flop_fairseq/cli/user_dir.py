"""``flop-user-dir``: prints the path to give fairseq's ``--user-dir``, wherever the package is installed."""

import argparse

from ..plugin import user_dir_path


def main(argv=None):
    argparse.ArgumentParser(prog="flop-user-dir",
                            description="Print the directory to pass to fairseq's --user-dir, e.g. "
                                        "fairseq-train --user-dir \"$(flop-user-dir)\" ...").parse_args(argv)
    print(user_dir_path())


if __name__ == "__main__":
    main()
