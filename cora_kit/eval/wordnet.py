"""Build an NLTK WordNet 3.0 corpus offline from a WordNet ``dict`` folder.

NLTK's METEOR needs the WordNet corpus (``nltk_data/corpora/wordnet``), which
``nltk.download`` cannot fetch here. Debian's ``wordnet-base`` package installs the
WordNet 3.0 database in ``/usr/share/wordnet``; NLTK 3.9+ also reads ``index.sense`` when
it loads the corpus (to map sense keys), which Debian ships in ``wordnet-sense-index``.
``lexnames``, WordNet's fixed list of the 45 lexicographer files (see lexnames(5WN)),
is in neither package and is generated below.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from pathlib import Path

from cora_kit.errors import CoraKitError

DEFAULT_SOURCE = Path("/usr/share/wordnet")

#: WordNet 3.0 lexicographer files: (number, name, syntactic category 1=n 2=v 3=a 4=r)
LEXNAMES: tuple[tuple[str, int], ...] = (
    ("adj.all", 3), ("adj.pert", 3), ("adv.all", 4),
    ("noun.Tops", 1), ("noun.act", 1), ("noun.animal", 1), ("noun.artifact", 1),
    ("noun.attribute", 1), ("noun.body", 1), ("noun.cognition", 1),
    ("noun.communication", 1), ("noun.event", 1), ("noun.feeling", 1), ("noun.food", 1),
    ("noun.group", 1), ("noun.location", 1), ("noun.motive", 1), ("noun.object", 1),
    ("noun.person", 1), ("noun.phenomenon", 1), ("noun.plant", 1), ("noun.possession", 1),
    ("noun.process", 1), ("noun.quantity", 1), ("noun.relation", 1), ("noun.shape", 1),
    ("noun.state", 1), ("noun.substance", 1), ("noun.time", 1),
    ("verb.body", 2), ("verb.change", 2), ("verb.cognition", 2), ("verb.communication", 2),
    ("verb.competition", 2), ("verb.consumption", 2), ("verb.contact", 2),
    ("verb.creation", 2), ("verb.emotion", 2), ("verb.motion", 2), ("verb.perception", 2),
    ("verb.possession", 2), ("verb.social", 2), ("verb.stative", 2), ("verb.weather", 2),
    ("adj.ppl", 3),
)  # fmt: skip

#: files NLTK's WordNetCorpusReader needs, copied from the source folder
REQUIRED_FILES: tuple[str, ...] = tuple(
    f"{kind}.{pos}" for kind in ("data", "index") for pos in ("noun", "verb", "adj", "adv")
) + tuple(f"{pos}.exc" for pos in ("noun", "verb", "adj", "adv")) + ("index.sense",)
OPTIONAL_FILES: tuple[str, ...] = ("cntlist.rev", "cntlist", "LICENSE", "README")


def lexnames_text() -> str:
    """The 45-line ``lexnames`` file: ``NN<TAB>name<TAB>category``."""
    return "".join(f"{i:02d}\t{name}\t{cat}\n" for i, (name, cat) in enumerate(LEXNAMES))


def default_dest() -> Path:
    """``$NLTK_DATA`` (first entry) or ``~/nltk_data``: an nltk_data root NLTK searches."""
    env = os.environ.get("NLTK_DATA")
    if env:
        return Path(env.split(os.pathsep)[0]).expanduser()
    return Path.home() / "nltk_data"


def missing_source_message(source: Path, missing: list[str]) -> str:
    return (
        f"WordNet 3.0 database not complete in {source} (missing: {', '.join(missing)})."
        " Install Debian's packages: apt-get install wordnet-base wordnet-sense-index, or pass"
        " --source to a WordNet 3.0 'dict' folder"
    )


def setup_wordnet(
    source: str | Path = DEFAULT_SOURCE, dest: str | Path | None = None, force: bool = False
) -> Path:
    """Build ``<dest>/corpora/wordnet`` from ``source``; returns the corpus folder.

    Raises ``CoraKitError`` when the source lacks a required file, or the target
    exists (unless ``force``). The result is checked by loading it with NLTK.
    """
    source = Path(source)
    missing = [f for f in REQUIRED_FILES if not (source / f).is_file()]
    if missing:
        raise CoraKitError(missing_source_message(source, missing))
    root = Path(dest).expanduser() if dest is not None else default_dest()
    target = root / "corpora" / "wordnet"
    if target.exists() and any(target.iterdir()) and not force:
        raise CoraKitError(f"{target} already exists; pass --force to rebuild it")
    with tempfile.TemporaryDirectory(prefix="cora-kit-wordnet-") as scratch:
        tmp = Path(scratch) / "corpora" / "wordnet"
        tmp.mkdir(parents=True)
        for name in REQUIRED_FILES + OPTIONAL_FILES:
            if (source / name).is_file():
                shutil.copyfile(source / name, tmp / name)
        if (source / "lexnames").is_file():
            shutil.copyfile(source / "lexnames", tmp / "lexnames")
        else:
            (tmp / "lexnames").write_text(lexnames_text(), encoding="ascii")
        check_wordnet(tmp)
        if target.exists():
            shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(tmp), str(target))
    return target


def check_wordnet(folder: str | Path) -> str:
    """Load ``folder`` with NLTK's WordNet reader; return its version or raise.

    NLTK (3.9+) only opens files under an ``nltk.data.path`` root, so the folder's
    nltk_data root (``folder/../..``) is added to that list for the check only.
    """
    import nltk
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    root = str(Path(folder).resolve().parent.parent)
    added = root not in nltk.data.path
    if added:
        nltk.data.path.insert(0, root)
    try:
        with warnings.catch_warnings():  # "multilingual functions not available": no OMW
            warnings.simplefilter("ignore", UserWarning)
            reader = WordNetCorpusReader(str(Path(folder).resolve()), None)
        version = reader.get_version()
        if not reader.synsets("dog"):
            raise ValueError("no synsets for 'dog'")
    except Exception as exc:
        raise CoraKitError(f"the WordNet corpus built in {folder} does not load: {exc}") from exc
    finally:
        if added:
            nltk.data.path.remove(root)
    return version
