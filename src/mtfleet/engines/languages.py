"""A language code as a user gives it (`en`, `mr`, `hin`) and as a model knows it (`eng_Latn`).

Every family names languages by ISO 639: NLLB and IndicTrans2 by 639-3 and a script (`mar_Deva`),
mBART-50 by 639-1 and a region (`mr_IN`), M2M100 and MADLAD-400 by 639-1 (`mr`, `<2mr>`). A code
the model does not have is looked for among the model's own codes by its language: the same
ISO 639-3 language first, then the individual language a macrolanguage is written as (Arabic as
Standard Arabic, `arb_Arab`), then the other members of its macrolanguage. The tables below are
ISO's own: 639-1 to 639-3, and the macrolanguages whose members the families name.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Collection
from dataclasses import dataclass

from mtfleet.errors import ModelError

# ISO 639-1 -> ISO 639-3 (the terminology code, as models use it)
ISO_639_1_PAIRS = """
    aa:aar ab:abk ae:ave af:afr ak:aka am:amh an:arg ar:ara as:asm av:ava ay:aym az:aze ba:bak
    be:bel bg:bul bi:bis bm:bam bn:ben bo:bod br:bre bs:bos ca:cat ce:che ch:cha co:cos cr:cre
    cs:ces cu:chu cv:chv cy:cym da:dan de:deu dv:div dz:dzo ee:ewe el:ell en:eng eo:epo es:spa
    et:est eu:eus fa:fas ff:ful fi:fin fj:fij fo:fao fr:fra fy:fry ga:gle gd:gla gl:glg gn:grn
    gu:guj gv:glv ha:hau he:heb hi:hin ho:hmo hr:hrv ht:hat hu:hun hy:hye hz:her ia:ina id:ind
    ie:ile ig:ibo ii:iii ik:ipk io:ido is:isl it:ita iu:iku ja:jpn jv:jav ka:kat kg:kon ki:kik
    kj:kua kk:kaz kl:kal km:khm kn:kan ko:kor kr:kau ks:kas ku:kur kv:kom kw:cor ky:kir la:lat
    lb:ltz lg:lug li:lim ln:lin lo:lao lt:lit lu:lub lv:lav mg:mlg mh:mah mi:mri mk:mkd ml:mal
    mn:mon mr:mar ms:msa mt:mlt my:mya na:nau nb:nob nd:nde ne:nep ng:ndo nl:nld nn:nno no:nor
    nr:nbl nv:nav ny:nya oc:oci oj:oji om:orm or:ori os:oss pa:pan pi:pli pl:pol ps:pus pt:por
    qu:que rm:roh rn:run ro:ron ru:rus rw:kin sa:san sc:srd sd:snd se:sme sg:sag si:sin sk:slk
    sl:slv sm:smo sn:sna so:som sq:sqi sr:srp ss:ssw st:sot su:sun sv:swe sw:swa ta:tam te:tel
    tg:tgk th:tha ti:tir tk:tuk tl:tgl tn:tsn to:ton tr:tur ts:tso tt:tat tw:twi ty:tah ug:uig
    uk:ukr ur:urd uz:uzb ve:ven vi:vie vo:vol wa:wln wo:wol xh:xho yi:yid yo:yor za:zha zh:zho
    zu:zul
    """
ISO_639_1 = {one: three for one, three in (pair.split(":") for pair in ISO_639_1_PAIRS.split())}
ISO_639_1_OF = {three: one for one, three in ISO_639_1.items()}
# Macrolanguage -> the individual language it is usually written as (NLLB's codes name these)
WRITTEN_AS = {
    "ara": "arb", "aym": "ayr", "aze": "azj", "est": "ekk", "fas": "pes", "grn": "gug",
    "kau": "knc", "kon": "kng", "kur": "kmr", "lav": "lvs", "mlg": "plt", "mon": "khk",
    "msa": "zsm", "nep": "npi", "nor": "nob", "ori": "ory", "orm": "gaz", "pus": "pbt",
    "que": "quy", "sqi": "als", "swa": "swh", "uzb": "uzn", "yid": "ydd", "zho": "cmn",
}  # fmt: skip
# Other members of those macrolanguages that translation models name
MEMBER_OF = {
    **{member: macro for macro, member in WRITTEN_AS.items()},
    **dict.fromkeys(("acm", "acq", "aeb", "ajp", "apc", "ars", "ary", "arz"), "ara"),
    "azb": "aze", "ckb": "kur", "nno": "nor", "prs": "fas", "taq": "tmh", "yue": "zho",
}  # fmt: skip
# A code as ISO 639 and BCP 47 write it: en, eng, mr_IN, mar_Deva, zh-Hant-TW, M2M100's __en__
WELL_FORMED = re.compile(
    r"(?:__)?(?P<language>[A-Za-z]{2,3})(?:[_-](?P<script>[A-Z][a-z]{3}))?"
    r"(?:[_-](?:[A-Z]{2}|[0-9]{3}))?(?:__)?"
)
SUGGESTIONS = 6


@dataclass(frozen=True)
class LanguageCode:
    """A code read as ISO 639: its 639-3 language (None when it names none), its script, and
    whether it is well formed (`mar_Deva2` is not, though its language reads as Marathi)."""

    code: str
    language: str | None
    script: str | None
    well_formed: bool

    @classmethod
    def read(cls, code: str) -> LanguageCode:
        found = WELL_FORMED.fullmatch(code) or WELL_FORMED.match(code)
        if found is None:
            return cls(code, None, None, False)
        base = found["language"].lower()
        language = ISO_639_1.get(base) if len(base) == 2 else base
        return cls(code, language, found["script"], found.end() == len(code))

    def kinship(self, other: LanguageCode) -> int | None:
        """0: the same language; 1: a macrolanguage and the language it is written as; 2: two
        members of one macrolanguage; None: other languages."""
        mine, theirs = self.language, other.language
        if mine is None or theirs is None:
            return None
        if mine == theirs:
            return 0
        if WRITTEN_AS.get(mine) == theirs or WRITTEN_AS.get(theirs) == mine:
            return 1
        if MEMBER_OF.get(mine, mine) == MEMBER_OF.get(theirs, theirs):
            return 2
        return None


def iso_639(code: str) -> dict[str, str | None]:
    """What a model's code names in ISO 639: its 639-3 language, the 639-1 code a user types for
    it (its macrolanguage's where it is the language that one is written as: `arb_Arab` is `ar`),
    and its script; None where the code names none of them (`>>fr<<`, `mr_IN` has no script)."""
    read = LanguageCode.read(code)
    language = read.language
    macro = MEMBER_OF.get(language) if language is not None else None
    typed = ISO_639_1_OF.get(language or "")
    if typed is None and macro is not None and WRITTEN_AS.get(macro) == language:
        typed = ISO_639_1_OF.get(macro)
    return {"iso639_3": language, "iso639_1": typed, "script": read.script}


def model_code(code: str, codes: Collection[str], owner: str, option: str) -> str:
    """The model's code for `code`: itself, or the one code of its language the model has.

    `owner` starts the sentence a code the model cannot take is refused with ("Model m2m"),
    `option` names where the code was given (--tgt-lang). A code in a script the model does not
    write its language in (`mar_Latn` for NLLB) is refused, with the model's codes of that
    language first among the nearest.
    """
    if code in codes:
        return code
    given = LanguageCode.read(code)
    if given.well_formed:
        same = _same_language(given, codes)
        if len(same) == 1:
            return same[0]
        if same:
            raise ModelError(
                f"{owner} has {len(same)} codes for {option} {code}: {', '.join(same)}; "
                f"give one of them."
            )
    raise ModelError(
        f"{owner} has no language code {code!r} ({option}); the nearest it has are "
        f"{', '.join(nearest_codes(code, codes))} ({len(codes)} in all)."
    )


def nearest_codes(code: str, codes: Collection[str], count: int = SUGGESTIONS) -> list[str]:
    """The model's codes nearest to `code`: those of its language first (closest kin, then
    the same script), then the most alike as strings."""
    given = LanguageCode.read(code)
    kin: list[tuple[int, bool, str]] = []
    for known in codes:
        kinship = given.kinship(LanguageCode.read(known))
        if kinship is not None:
            kin.append((kinship, LanguageCode.read(known).script != given.script, known))
    nearest = [known for *_, known in sorted(kin)]
    alike = difflib.get_close_matches(code, list(codes), n=count, cutoff=0.3)
    nearest += [known for known in alike if known not in nearest]
    if not nearest:
        nearest = sorted(codes)
    return nearest[:count]


def _same_language(given: LanguageCode, codes: Collection[str]) -> list[str]:
    """The model's codes of the closest kin of `given`'s language; of several, those without
    a script (MADLAD's `hi` before its romanized `hi_Latn`). A script given (`mar_Deva`) is
    kept to where the model writes scripts at all (NLLB), and ignored where it writes none."""
    known = [LanguageCode.read(code) for code in codes]
    if given.script is not None and any(read.script for read in known):
        known = [read for read in known if read.script == given.script]
    by_kinship: dict[int, list[LanguageCode]] = {}
    for read in known:
        kinship = given.kinship(read)
        if kinship is not None:
            by_kinship.setdefault(kinship, []).append(read)
    if not by_kinship:
        return []
    closest = by_kinship[min(by_kinship)]
    plain = [read for read in closest if read.script is None]
    return sorted(read.code for read in (plain or closest))


@dataclass(frozen=True)
class CodeMapping:
    """A code a user gave (`mr`) for an option (`tgt_lang`), and the model's code it means."""

    field: str
    given: str
    code: str


def code_mappings(
    given: dict[str, str | list[str] | None], resolved: dict[str, str | list[str] | None]
) -> list[CodeMapping]:
    """The codes that `resolved` (the model's) writes otherwise than `given` (the user's)."""
    mappings = []
    for field, value in given.items():
        before = value if isinstance(value, list) else [value]
        after = resolved[field]
        after = after if isinstance(after, list) else [after]
        for mine, theirs in zip(before, after, strict=True):
            if mine is not None and theirs is not None and mine != theirs:
                mappings.append(CodeMapping(field, mine, theirs))
    return mappings
