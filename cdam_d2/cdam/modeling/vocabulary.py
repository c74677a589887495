"""Class vocabularies: name files, synonyms and the augmented text prompts (ATP).

A vocabulary is a list of classes; each class has one or more synonyms. Every synonym becomes its own
text query; ``query_to_class[q]`` gives the class index of query ``q``; a class's probability is the max
over its synonyms' probabilities (of the shipped name files, ``voc20.txt`` and SCLIP's VOC and COCO-Object
files under ``peers/sclip/`` list synonyms; the others have one name per class).
"""
import os
from dataclasses import dataclass
from typing import List, Sequence, Tuple

CLASS_NAMES_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(__file__))), "data", "class_names")
ATP_WORDS_FILE = "atp_words.txt"


@dataclass(frozen=True)
class Vocabulary:
    """Text queries of a class list.

    Attributes:
        queries: one name per text query (synonyms flattened, class order kept).
        query_to_class: class index of each query, same length as ``queries``.
        num_classes: number of classes (lines of the name file, or entries of the parsed list).
    """

    queries: Tuple[str, ...]
    query_to_class: Tuple[int, ...]
    num_classes: int


def parse_class_lines(lines: Sequence[str], source: str = "<vocabulary>",
                      how_to_write: str = "write one class per line with synonyms separated by ','") -> Vocabulary:
    """Parse one class per entry; synonyms are separated by commas.

    Whitespace around each synonym is dropped (so the released ``"wood "`` gives ``"wood"``, which tokenizes
    identically). Empty entries raise, naming ``source`` and saying ``how_to_write`` the entries.
    """
    queries, query_to_class = [], []
    for class_index, line in enumerate(lines):
        names = [name.strip() for name in line.strip().split(",")]
        if not all(names):
            raise ValueError(f"{source}: class {class_index} ({line.strip()!r}) has an empty name; {how_to_write}")
        queries.extend(names)
        query_to_class.extend([class_index] * len(names))
    if not queries:
        raise ValueError(f"{source}: no class names found")
    return Vocabulary(tuple(queries), tuple(query_to_class), len(lines))


def resolve_class_names_file(name_or_path: str) -> str:
    """A path as given (``~`` expanded) if it exists, else a file of ``cdam_d2/data/class_names``."""
    if os.path.isfile(os.path.expanduser(name_or_path)):
        return os.path.expanduser(name_or_path)
    packaged = os.path.join(CLASS_NAMES_DIR, name_or_path)
    if os.path.isfile(packaged):
        return packaged
    raise FileNotFoundError(
        f"Class-name file {name_or_path!r} not found, neither as a path nor in {CLASS_NAMES_DIR} "
        f"(available: {sorted(os.listdir(CLASS_NAMES_DIR))})")


def read_class_names_file(name_or_path: str) -> Vocabulary:
    """Read a name file: one class per line (line index = class index), synonyms separated by ','."""
    path = resolve_class_names_file(name_or_path)
    with open(path, encoding="utf-8") as f:
        lines = [line.rstrip("\n") for line in f]
    while lines and not lines[-1].strip():
        lines.pop()
    return parse_class_lines(lines, source=path)


def parse_vocabulary_string(text: str) -> Vocabulary:
    """Parse a command-line vocabulary: ``"cat; dog; sofa, couch"`` (';' separates classes, ',' synonyms).

    One trailing ';' is allowed; an empty vocabulary or an empty class (``"a;;b"``) raises, since dropping
    it would shift every later class index.
    """
    entries = text.split(";")
    if len(entries) > 1 and not entries[-1].strip():
        entries.pop()
    if not text.strip():
        raise ValueError("The vocabulary is empty: give classes separated by ';' (synonyms by ','), "
                         'e.g. "background; cat; dog, puppy"')
    return parse_class_lines(entries, source=f"Vocabulary {text!r}",
                             how_to_write="separate classes by ';' and synonyms by ','")


def atp_words() -> List[str]:
    """The 80 augmented-text-prompt words shared by all datasets, in the released order: PACO colours, patterns,
    materials and transparency words, COCO thing and COCO-Stuff supercategories, then "person"."""
    return list(read_class_names_file(ATP_WORDS_FILE).queries)
