"""Prepare a dataset in TFDS format: `python -m looksam.data prepare cifar100 --data-dir DIR`.

TFDS's own `tfds build` command imports apache_beam, which this project does not install; this
calls the same builder directly.
"""

from __future__ import annotations

import argparse
import sys

from looksam.data import pipeline


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m looksam.data", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    prep = sub.add_parser("prepare", help="download (where allowed) and prepare a dataset")
    prep.add_argument("name", choices=sorted(pipeline.DATASETS))
    prep.add_argument("--data-dir", default=None, help="TFDS data_dir (default: $TFDS_DATA_DIR)")
    prep.add_argument("--manual-dir", default=None,
                      help="where ImageNet's archives are (default: <data-dir>/downloads/manual)")
    args = p.parse_args(argv)

    import tensorflow_datasets as tfds

    directory = pipeline.data_dir(args.data_dir)
    ds_spec = pipeline.spec(args.name)
    b = tfds.builder(ds_spec.tfds_name, data_dir=directory)
    if b.is_prepared():
        print(f"{args.name} is already prepared in {directory}")
        return 0
    print(f"preparing {args.name} in {directory} ...", flush=True)
    config = tfds.download.DownloadConfig(manual_dir=args.manual_dir)
    try:
        b.download_and_prepare(download_config=config)
    except Exception as e:  # noqa: BLE001 - report TFDS's reason with the fix, not a stack trace
        sys.exit(f"could not prepare {args.name}: {e}\n\n"
                 + pipeline.prepare_instructions(args.name, directory))
    splits = {k: v.num_examples for k, v in b.info.splits.items()}
    print(f"done: {splits}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
