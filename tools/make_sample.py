"""Derive the packaged CIFAR-10 sample from the full JPEG archive.

The sample keeps the archive's image-folder layout and copies the JPEG bytes unchanged, taking a
fixed, seeded choice of images per class so that the result is reproducible:

    python tools/make_sample.py ../shared/data/cifar10-jpeg.tar.gz kdarts/datasets/sample
"""

from __future__ import annotations

import argparse
import random
import shutil
import tarfile
from collections import defaultdict
from pathlib import Path, PurePosixPath

SPLIT_SIZES = {"train": 120, "test": 30}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("archive", type=Path, help="cifar10-jpeg.tar.gz (train/<class>/NNNN.jpg, test/<class>/NNNN.jpg)")
    parser.add_argument("output", type=Path, help="folder to write the sample into (replaced)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    with tarfile.open(args.archive, "r:gz") as archive:
        members = [member for member in archive.getmembers() if member.isfile() and member.name.endswith(".jpg")]
        by_split_and_class: dict[tuple[str, str], list[tarfile.TarInfo]] = defaultdict(list)
        for member in members:
            parts = PurePosixPath(member.name).parts[-3:]
            if len(parts) == 3 and parts[0] in SPLIT_SIZES:
                by_split_and_class[(parts[0], parts[1])].append(member)

        if args.output.exists():
            shutil.rmtree(args.output)
        rng = random.Random(args.seed)
        for (split, class_name), class_members in sorted(by_split_and_class.items()):
            class_members.sort(key=lambda member: member.name)
            chosen = sorted(rng.sample(class_members, SPLIT_SIZES[split]), key=lambda member: member.name)
            class_dir = args.output / split / class_name
            class_dir.mkdir(parents=True)
            for member in chosen:
                source = archive.extractfile(member)
                assert source is not None
                (class_dir / PurePosixPath(member.name).name).write_bytes(source.read())

    total = sum(1 for _ in args.output.rglob("*.jpg"))
    size = sum(path.stat().st_size for path in args.output.rglob("*.jpg"))
    print(f"wrote {total} images ({size / 1e6:.2f} MB) to {args.output}")


if __name__ == "__main__":
    main()
