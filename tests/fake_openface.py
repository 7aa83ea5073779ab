"""A stand-in for OpenFace 2.2's FeatureExtraction, for tests (the real program is not run in this repository).

It honours -f VIDEO, -out_dir DIR and the output-group flags, and writes the OpenFace CSV named by
$FAKE_OPENFACE_SOURCE (a real OpenFace 2.2 output) as DIR/<video stem>.csv, as OpenFace does. The dummy video's
text steers it: 'fail' exits 1 with a message, 'nocsv' exits 0 writing nothing, 'noface' marks every frame
success 0, 'slow S' sleeps S seconds first, 'killself' dies by SIGKILL. Each call is appended to $FAKE_OPENFACE_LOG as
'start end argv...' (tab-separated), so tests can see the command line and which calls overlapped.
Standard library only: it runs under any Python."""
import csv
import os
import sys
import time


def main(argv: list[str]) -> int:
    started = time.time()
    video = argv[argv.index("-f") + 1]
    out_dir = argv[argv.index("-out_dir") + 1]
    with open(video, encoding="utf-8", errors="replace") as handle:
        script = handle.read().split()
    if "killself" in script:
        os.kill(os.getpid(), 9)
    if "slow" in script:
        time.sleep(float(script[script.index("slow") + 1]))
    try:
        if "fail" in script:
            print("Could not open the video file", file=sys.stderr)
            return 1
        if "nocsv" in script:
            return 0
        with open(os.environ["FAKE_OPENFACE_SOURCE"], newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle, skipinitialspace=True))
        if "noface" in script:
            success = rows[0].index("success")
            for row in rows[1:]:
                row[success] = "0"
        stem = os.path.splitext(os.path.basename(video))[0]
        with open(os.path.join(out_dir, stem + ".csv"), "w", encoding="utf-8") as handle:
            handle.write("\n".join(", ".join(row) for row in rows) + "\n")
        with open(os.path.join(out_dir, stem + "_of_details.txt"), "w") as handle:
            handle.write(f"Input:{video}\n")
        return 0
    finally:
        with open(os.environ["FAKE_OPENFACE_LOG"], "a", encoding="utf-8") as log:
            log.write("\t".join([f"{started:.4f}", f"{time.time():.4f}", *argv]) + "\n")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
