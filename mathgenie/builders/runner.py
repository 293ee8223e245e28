"""Running a `datasets` builder in-process (``datasets`` ≥ 4 no longer runs dataset scripts)."""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

import datasets


class BuilderInputError(ValueError):
    """Base of the input errors our builders raise (bad seed record, stage shard without a column)."""


def run_builder(
    builder_cls: type[datasets.DatasetBuilder],
    *,
    config_name: str,
    cache_dir: str | Path | None = None,
    **config_kwargs,
) -> datasets.DatasetDict:
    """``download_and_prepare`` + ``as_dataset`` for a builder class.

    Rows are regenerated on every call (the inputs are local files or Hub revisions that may have changed, and
    regenerating costs seconds). ``cache_dir=None`` builds in a temporary directory and returns in-memory datasets;
    otherwise the Arrow files stay in ``cache_dir`` and the datasets are memory-mapped from there. Input errors are
    re-raised as themselves, not wrapped in `datasets`' generic ``DatasetGenerationError``.
    """
    temporary = cache_dir is None
    with contextlib.ExitStack() as stack:
        if temporary:
            cache_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="mathgenie-build-"))
        builder = builder_cls(config_name=config_name, cache_dir=str(cache_dir), **config_kwargs)
        try:
            builder.download_and_prepare(download_mode=datasets.DownloadMode.REUSE_CACHE_IF_EXISTS)
        except datasets.exceptions.DatasetGenerationError as e:
            if isinstance(e.__cause__, BuilderInputError):
                raise e.__cause__ from None
            raise
        return builder.as_dataset(in_memory=temporary)
