"""Ship grammar/saleflow.lark inside the wheel as saleflow/grammar/saleflow.lark.

The grammar lives at the top of the repository (it is a product artefact that
ops and reviewers read), but an installed package must find it without the
source tree; `saleflow.parse.grammar_path()` looks for the packaged copy first.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildWithGrammar(build_py):
    def run(self) -> None:
        super().run()
        target = Path(self.build_lib) / "saleflow" / "grammar"
        target.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(__file__).parent / "grammar" / "saleflow.lark", target / "saleflow.lark")


setup(cmdclass={"build_py": BuildWithGrammar})
