"""The 1 KB live playlist every proxy serves in the hit benchmarks (benches/run.sh,
benches/instructions.sh): a realistic one, padded with comment lines to exactly 1 KiB.

    python3 benches/playlist_1k.py OUT
"""
import sys

lines = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-TARGETDURATION:2", "#EXT-X-MEDIA-SEQUENCE:1000"]
for n in range(1000, 1006):
    lines += ["#EXTINF:2.000,", f"seg{n}.ts"]
text = "\n".join(lines) + "\n"
while len(text) < 1024:
    text += "# padding to 1 KiB\n"
open(sys.argv[1], "w").write(text[:1023] + "\n")
