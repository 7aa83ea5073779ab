"""The OpenFace program that turns videos into CSVs: where it is, which landmark model it runs, and what it is.

Found, in order: --openface (a path or a command such as `docker run ...`), $OPENFACE_BIN, the program on PATH,
the build of tools/build_openface.sh. With --multi-face the program is FaceLandmarkVidMulti (beside a
FeatureExtraction that was found). The landmark model is CE-CLM when its patch experts are installed beside the
program, else CLNF, whose files every build has. Every extraction records `provenance()`.
"""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from errors import DataError

SINGLE_FACE, MULTI_FACE = "FeatureExtraction", "FaceLandmarkVidMulti"
BIN_ENV = "OPENFACE_BIN"
OUTPUT_FLAGS: tuple[str, ...] = ("-aus", "-gaze", "-pose")  # OpenFace 2.2's output groups that hold our features
BUILD_SCRIPT = Path(__file__).resolve().parent / "tools" / "build_openface.sh"
VERSION_FILE = "openface_version.txt"  # written beside the programs by tools/build_openface.sh
LANDMARK_MODELS: tuple[str, ...] = ("auto", "ce-clm", "clnf")
CLNF_MODEL = "model/main_clnf_general.txt"  # shipped with OpenFace's source; OpenFace finds it beside its program
CEN_PATCH_EXPERTS = "model/patch_experts/cen_patches_*.dat"  # CE-CLM's, fetched only by OpenFace's download_models.sh
HOW_TO_GET_OPENFACE = (
    "build it with `make openface` (tools/build_openface.sh; OPENFACE_SRC names a source folder or tarball), or "
    f"pass --openface PATH, set {BIN_ENV}, or put it on PATH; or run it with Docker: --openface \"docker run --rm "
    "-v $PWD:$PWD -w $PWD --entrypoint /home/openface-build/build/bin/FeatureExtraction algebr/openface:latest\"")


@dataclass(frozen=True)
class OpenFaceProgram:
    """One OpenFace program with the flags every video gets; `args` is the command line for one video."""

    command: tuple[str, ...]  # the program (resolved) and the fixed arguments given with it
    program: str  # FeatureExtraction or FaceLandmarkVidMulti
    version: str  # e.g. '2.2.0'; 'unknown' where the build did not record it
    landmark_model: str  # 'CE-CLM', 'CLNF', or the -mloc file given with the command
    landmark_flags: tuple[str, ...]  # what selects the landmark model (nothing for OpenFace's default, CE-CLM)
    note: str = ""  # why this landmark model, when it was chosen here

    @property
    def flags(self) -> tuple[str, ...]:
        """Every argument but the program, the video and the output folder."""
        return (*self.command[1:], *self.landmark_flags, *OUTPUT_FLAGS)

    def args(self, video: Path, out_dir: Path) -> list[str]:
        return [*self.command, "-f", str(video), "-out_dir", str(out_dir), *self.landmark_flags, *OUTPUT_FLAGS]

    def provenance(self) -> dict[str, str]:
        """What made a CSV, as extraction_status.csv and a labelled table's manifest record it."""
        return {"openface_version": self.version, "openface_program": self.program,
                "landmark_model": self.landmark_model, "openface_flags": " ".join(self.flags)}

    def describe(self) -> str:
        return (f"OpenFace {self.version} {self.program} ({self.command[0]}), landmark model {self.landmark_model}"
                + (f" ({self.note})" if self.note else ""))


def built_program() -> str | None:
    """FeatureExtraction of the tools/build_openface.sh build, when there is one (the script knows its cache)."""
    if not BUILD_SCRIPT.is_file():
        return None
    try:
        done = subprocess.run([shutil.which("bash") or "/bin/bash", str(BUILD_SCRIPT), "--path"],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    path = done.stdout.strip()
    return path if done.returncode == 0 and path else None


def executable(name: str) -> str | None:
    """The file a command name or path runs, when it is an executable file."""
    program = name if os.sep in name else shutil.which(name)
    return program if program and os.path.isfile(program) and os.access(program, os.X_OK) else None


def program_command(given: str | None, multi_face: bool) -> tuple[list[str], bool]:
    """The command to run (program resolved) and whether it is OpenFace itself rather than a wrapper (Docker)."""
    name = MULTI_FACE if multi_face else SINGLE_FACE
    text = given or os.environ.get(BIN_ENV)
    command = shlex.split(text) if text else [name]
    program = executable(command[0]) if command else None
    if program is None and not text:
        program = built_program()
    if program is None:
        shown = command[0] if command else text
        raise DataError(None, f"OpenFace's {name} was not found ({shown!r}); {HOW_TO_GET_OPENFACE}")
    base = os.path.basename(program)
    if multi_face and base == SINGLE_FACE:
        sibling = os.path.join(os.path.dirname(program), MULTI_FACE)
        if executable(sibling) is None:
            raise DataError(program, f"--multi-face needs {MULTI_FACE} beside it; {HOW_TO_GET_OPENFACE}")
        program, base = sibling, MULTI_FACE
    return [program, *command[1:]], base in (SINGLE_FACE, MULTI_FACE)


def given_landmark_model(args: list[str]) -> str | None:
    """The -mloc file named in a command's own arguments, if any."""
    return args[args.index("-mloc") + 1] if "-mloc" in args[:-1] else None


def landmark_choice(choice: str, folder: Path | None, fixed: list[str]) -> tuple[str, tuple[str, ...], str]:
    """(model name, flags, note) for --landmark-model; `folder` holds the program and its model/ (None for a
    wrapper such as Docker, whose files cannot be seen from here)."""
    if choice not in LANDMARK_MODELS:
        raise DataError(None, f"unknown landmark model {choice!r}; choose one of {', '.join(LANDMARK_MODELS)}")
    given = given_landmark_model(fixed)
    if given is not None:
        return Path(given).name, (), "-mloc given with the program"
    has_cen = folder is not None and any(folder.glob(CEN_PATCH_EXPERTS))
    if choice == "clnf":
        return "CLNF", ("-mloc", CLNF_MODEL), ""
    if choice == "ce-clm":
        if folder is not None and not has_cen:
            raise DataError(folder, f"CE-CLM's patch experts ({CEN_PATCH_EXPERTS}) are not installed here: run "
                                    "OpenFace's download_models.sh, or use --landmark-model clnf")
        return "CE-CLM", (), ""
    if folder is None:
        return "CE-CLM", (), "OpenFace's default; its files are not visible from here"
    if has_cen:
        return "CE-CLM", (), "its patch experts are installed"
    return "CLNF", ("-mloc", CLNF_MODEL), ("CE-CLM's patch experts are not installed; OpenFace's download_models.sh "
                                           "fetches them")


def openface_version(folder: Path | None) -> str:
    """The version the build recorded beside the program, or 'unknown'."""
    if folder is None:
        return "unknown"
    try:
        return (folder / VERSION_FILE).read_text().strip() or "unknown"
    except OSError:
        return "unknown"


def find_openface(given: str | None, multi_face: bool, landmark_model: str = "auto") -> OpenFaceProgram:
    """The program to run and its flags; one line saying how to get OpenFace when it is not found."""
    command, is_openface = program_command(given, multi_face)
    folder = Path(command[0]).parent if is_openface else None
    model, flags, note = landmark_choice(landmark_model, folder, command[1:])
    program = Path(command[0]).name if is_openface else (MULTI_FACE if multi_face else SINGLE_FACE)
    return OpenFaceProgram(tuple(command), program, openface_version(folder), model, flags, note)
