"""``checkpoint_last.pt`` that survives SIGKILL.

fairseq writes each checkpoint once, atomically (a temporary file, then a rename), and then
*copies* it to the other names due at that update (``checkpoint_last.pt`` among them) with
``shutil.copyfile``: a run killed during that copy leaves a truncated ``checkpoint_last.pt``,
and the restarted command cannot resume. The plugin makes that copy go through a temporary
file and a rename as well (local files only; with iopath installed fairseq uses its own).
"""

import os
import shutil


def _atomic_copy(src_path: str, dst_path: str, overwrite: bool = False) -> bool:
    if os.path.exists(dst_path) and not overwrite:
        return False
    tmp = f"{dst_path}.tmp-copy"
    shutil.copyfile(src_path, tmp)
    os.replace(tmp, dst_path)
    return True


def install() -> None:
    """Replaces fairseq's ``PathManager.copy`` for local files; idempotent."""
    from fairseq import file_io

    if file_io.IOPathManager is None and file_io.PathManager.copy is not _atomic_copy:
        file_io.PathManager.copy = staticmethod(_atomic_copy)
