"""Getting files onto disk safely: checked downloads, contained extraction, atomic writes.

Every file is written under a temporary name and renamed when complete, so a crash at any point
leaves nothing that looks finished; the next run starts that step again.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import shutil
import tarfile
import tempfile
import urllib.request
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from experiments.core.atomic import written_atomically
from experiments.core.errors import UserError

log = logging.getLogger(__name__)
T = TypeVar("T")


class DamagedFile(UserError):
    """A data file that cannot be what it claims (truncated, garbled, wrong header or shape, unsafe members).

    `paths` are what to delete so that a fresh copy replaces it: the file and whatever it was made from.
    """

    def __init__(self, message: str, *paths: Path) -> None:
        super().__init__(message)
        self.paths = paths


def refetching_damaged(load: Callable[[], T], download: bool) -> T:
    """`load()`; if it meets a damaged file, delete it and what it came from, and load again, which fetches a
    fresh copy checked against the official md5, when downloading is allowed. Bad data is never used."""
    try:
        return load()
    except DamagedFile as damaged:
        if not download:
            raise UserError(f"{damaged}; delete it, or allow data.download, to get a fresh copy") from damaged
        log.warning("%s; fetching a fresh copy", damaged)
        for path in damaged.paths:
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink(missing_ok=True)
        try:
            return load()
        except UserError as again:
            raise UserError(f"{damaged}, and no fresh copy could be had: {again}") from again


def md5sum(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(urls: Sequence[str], destination: Path, md5: str) -> None:
    """Download the first URL that answers to `destination`, with a progress bar, checking its md5."""
    from tqdm.auto import tqdm

    destination.parent.mkdir(parents=True, exist_ok=True)
    errors = []
    for url in urls:
        try:
            with written_atomically(destination) as temporary:
                with urllib.request.urlopen(url, timeout=30) as response, open(temporary, "wb") as file:
                    total = int(response.headers.get("Content-Length") or 0) or None
                    with tqdm(total=total, unit="B", unit_scale=True, desc=destination.name) as bar:
                        for block in iter(lambda: response.read(1 << 20), b""):
                            file.write(block)
                            bar.update(len(block))
                if md5sum(temporary) != md5:
                    raise OSError(f"checksum mismatch (expected md5 {md5})")
            return
        except OSError as error:  # URLError, timeouts, refused connections, a wrong checksum
            errors.append(f"{url}: {getattr(error, 'reason', error)}")
    raise DownloadError("; ".join(errors))


class DownloadError(OSError):
    """No URL gave the file; the message says what each one answered."""


def extract_tar(archive: Path, destination: Path, top_level: str, required: Sequence[str] = ()) -> Path:
    """Extract `archive`, whose members all sit under `top_level/`, into `destination/top_level`.

    Members that would land outside (absolute paths, `..`, links pointing out, devices) are refused
    as they come, before they are written; extraction goes to a temporary folder that is renamed into
    place only when complete, with every `required` file in it, so a refusal leaves nothing behind. An incomplete
    `top_level` folder already there (an interrupted copy, a deleted file) is replaced.
    """
    target = destination / top_level

    def checked(member: tarfile.TarInfo, path: str) -> tarfile.TarInfo | None:
        # Checked as each member comes, in the one pass of decompression (a list of the members first
        # would decompress the archive twice); what came before goes with the scratch folder.
        if member.name.startswith(("/", "\\")) or ".." in Path(member.name).parts:
            raise DamagedFile(f"{archive} is unsafe: member {member.name!r} would land outside", archive)
        return tarfile.data_filter(member, path)

    with tempfile.TemporaryDirectory(dir=destination, prefix=f".{top_level}-") as scratch:
        try:
            with tarfile.open(archive) as tar:
                tar.extractall(scratch, filter=checked)
        except (tarfile.TarError, EOFError, zlib.error) as error:  # the data filter's refusals are TarErrors
            reason = str(error).splitlines()[0].removesuffix(":")  # tarfile lists each format it tried, line by line
            raise DamagedFile(f"cannot extract {archive}: {reason}", archive) from error
        extracted = Path(scratch) / top_level
        if not extracted.is_dir():
            raise DamagedFile(f"{archive} holds no folder {top_level}/", archive)
        if missing := [name for name in required if not (extracted / name).is_file()]:
            raise DamagedFile(f"{archive} has no {top_level}/{missing[0]}", archive)
        if target.exists():  # moved into the scratch folder, which goes away with it
            target.replace(Path(scratch) / f"{top_level}.incomplete")
        extracted.replace(target)
    return target


def gunzip(source: Path, destination: Path) -> None:
    try:
        with (
            written_atomically(destination) as temporary,
            gzip.open(source) as compressed,
            open(temporary, "wb") as file,
        ):
            shutil.copyfileobj(compressed, file)
    except (gzip.BadGzipFile, EOFError, zlib.error) as error:  # not other OSErrors: a full disk is no damage
        raise DamagedFile(f"cannot decompress {source}: {error}", source) from error


def fetch_or_explain(
    dataset: str, urls: Sequence[str], archive: Path, md5: str, allowed: bool, expected: Sequence[str]
) -> None:
    """`fetch`, or one line saying which files to put where when downloading is switched off or fails."""

    def explain(reason: str) -> UserError:
        folder = archive.parent
        return UserError(
            f"{dataset}: {', '.join(expected)} not found in {folder} and {reason}; "
            f"download {urls[0]} and put the files in {folder}"
        )

    if not allowed:
        raise explain("data.download=false")
    try:
        fetch(urls, archive, md5)
    except DownloadError as error:
        raise explain(f"the download failed ({error})") from error
