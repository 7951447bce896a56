"""`make demo` / `accelerando demo`: the main job with the built-in components.

Until the built-in generator ships, the demo renders a short excerpt of the corpus (three scores from three
collections, 20 s each) and analyses it: for each clip it prints the exact labels next to what an independent beat
tracker and key estimator hear in the audio, then runs the clip through the shipped codec and reports how close the
reconstruction is and how fast the decoder runs.
"""

import json
import sys
from pathlib import Path

__all__ = ["run_demo"]

_DEMO_COLLECTIONS = ("bach", "ryansMammoth", "palestrina")


def run_demo(out: str | Path | None = None) -> int:
    from accelerando.data.build import BuildConfig, build_corpus
    from accelerando.data.check import check_clip
    from accelerando.paths import cache_dir
    from accelerando.pretrained import load_codec

    root = Path(out).expanduser() if out else cache_dir("demo")
    cfg = BuildConfig(
        out=root / "corpus", collections=_DEMO_COLLECTIONS, limit=1, variants=1, max_seconds=20, workers=1
    )
    print(f"rendering {len(_DEMO_COLLECTIONS)} corpus excerpts into {cfg.out} ...", file=sys.stderr)
    build_corpus(cfg, progress=sys.stderr.isatty())
    rows = [json.loads(line) for line in (cfg.out / "manifest.jsonl").read_text().splitlines()]
    rows = [r for r in rows if r["collection"] in _DEMO_COLLECTIONS]
    print(f"analysing {len(rows)} clips (librosa beat tracker, Krumhansl key estimate) ...\n", file=sys.stderr)
    codec = load_codec("builtin")  # loaded once for every clip
    results = []
    for r in rows:
        clip = cfg.out / r["path"]
        res = check_clip(clip)
        results.append(res)
        print(f"{r['caption']}")
        print(f"  audio      {clip / 'mix.flac'}")
        print(
            f"  tempo      label {res['label_bpm']:.0f} BPM, tracker {res['tracker_bpm']:.1f} BPM; "
            f"beat F-measure {res['beat_f']:.2f} raw, {res['beat_f_aligned_any_level']:.2f} after "
            f"{1000 * res['aligned_any_level_shift_s']:.0f} ms latency at the {res['aligned_level']} level"
        )
        print(f"  key        label {res['label_key']}, estimated {res['estimated_key']} (MIREX {res['key_score']:.1f})")
        res.update(_codec_round_trip(codec, clip, root))
        print(
            f"  codec      {res['codec_audio']} (MR-STFT {res['codec_mrstft']:.3f} against the original; "
            f"decoded {res['codec_decode_x_realtime']:.0f}x real time)"
        )
    (root / "demo.json").write_text(json.dumps(results, indent=1))
    print(f"\nwrote {root / 'demo.json'}", file=sys.stderr)
    return 0


def _codec_round_trip(codec, clip: Path, root: Path) -> dict:
    """Encode and decode ``clip/mix.flac`` with the built-in codec; write the result and score it."""
    import time

    import torch

    from accelerando.audio import load, save
    from accelerando.eval.paired import mrstft

    wav, sr = load(clip / "mix.flac", sample_rate=codec.sample_rate, mono=True)
    with torch.inference_mode():
        z = codec.encode(wav[None])
        t = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            rec = codec.decode(z)[0, :, : wav.shape[-1]].float()
        wall = time.perf_counter() - t
    out = root / "codec" / f"{clip.name}.wav"
    save(out, rec, codec.sample_rate)
    return {
        "codec_audio": str(out),
        "codec_mrstft": mrstft(rec[0], wav[0]),
        "codec_decode_x_realtime": wav.shape[-1] / codec.sample_rate / wall,
    }
