"""`make demo` / `accelerando demo`: the main job with the built-in components.

With a generator (the built-in one when it ships, or ``--model PATH``), the demo generates 20 s from a prompt with
explicit bpm, key and meter, prints the JSON report of `accelerando generate --json` extended with what an
independent beat tracker and key estimator hear in the result, and writes the WAV and a spectrogram PNG with the
requested beats marked.

Without a generator, the demo renders a short excerpt of the corpus (three scores from three
collections, 20 s each) and analyses it: for each clip it prints the exact labels next to what an independent beat
tracker and key estimator hear in the audio, then runs the clip through the shipped codec and reports how close the
reconstruction is and how fast the decoder runs.
"""

import json
import sys
from pathlib import Path

__all__ = ["run_demo"]

_DEMO_COLLECTIONS = ("bach", "ryansMammoth", "palestrina")


DEMO_REQUEST = {
    "prompt": "A andante Baroque chorale for string quartet, in D major, 4/4 time at 96 BPM.",
    "bpm": 96.0,
    "key": "D major",
    "meter": "4/4",
    "instruments": "string_quartet",
    "duration": 20.0,
    "steps": 8,
    "cfg": None,  # the model's own guidance (and rhythm guidance) defaults
    "seed": 0,
}


def run_demo(out: str | Path | None = None, model: str | None = None) -> int:
    """Generate with ``model`` (default: the built-in generator when shipped), else analyse corpus excerpts."""
    from accelerando.pretrained import BUILTIN_DIR

    if model is not None or (BUILTIN_DIR / "generator.safetensors").is_file():
        return run_generation_demo(out, model or "builtin")
    return run_corpus_demo(out)


def run_generation_demo(out: str | Path | None = None, model: str = "builtin") -> int:
    """Generate :data:`DEMO_REQUEST`, write ``demo.wav``, ``demo.png`` and ``demo.json``, print the JSON report."""
    import resource
    import time

    import numpy as np
    import torch

    from accelerando.audio.spectrogram_png import save_spectrogram_png
    from accelerando.eval.key import estimate_key, key_score
    from accelerando.eval.tempo import estimate_tempo, tempo_adherence
    from accelerando.modules.precision import use_bf16
    from accelerando.paths import cache_dir
    from accelerando.pipelines.text_to_music import TextToMusicPipeline

    root = Path(out).expanduser() if out else cache_dir("demo")
    req = dict(DEMO_REQUEST)
    print(f"loading the generator {model!r} and the codec ...", file=sys.stderr)
    t0 = time.perf_counter()
    pipe = TextToMusicPipeline.from_pretrained(model)
    load_s = time.perf_counter() - t0
    print(f"generating {req['duration']:.0f} s: {req['prompt']!r}", file=sys.stderr)
    bar = None
    if sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=req["steps"], desc="generate", leave=False)
    t0 = time.perf_counter()
    res = pipe(
        req["prompt"],
        bpm=req["bpm"],
        key=req["key"],
        meter=req["meter"],
        instruments=req["instruments"],
        duration=req["duration"],
        steps=req["steps"],
        cfg=req["cfg"],
        generator=torch.Generator().manual_seed(req["seed"]),
        callback=(lambda *a: bar.update(1)) if bar else None,
    )
    wall = time.perf_counter() - t0
    if bar:
        bar.close()
    wav_path = res.save(root / "demo.wav")
    y = res.audio[0].mean(0).numpy()
    sr = res.sample_rate
    tempo = estimate_tempo(y, sr)  # the tracker's default prior, not the request
    acc = tempo_adherence(tempo, req["bpm"])
    tonic, mode = req["key"].split()
    est_key = estimate_key(y, sr)
    beat_period = 60.0 / req["bpm"]
    png = save_spectrogram_png(
        root / "demo.png",
        torch.from_numpy(y),
        sr,
        title=f"{req['prompt']}  (ticks: requested beats)",
        beats=np.arange(0.0, req["duration"], beat_period),
    )
    audio_seconds = y.shape[-1] / sr
    report = {
        "outputs": [str(wav_path)],
        "spectrogram": str(png),
        "sample_rate": sr,
        "audio_seconds": audio_seconds,
        "wall_seconds": wall,
        "load_seconds": load_s,
        "rtf": audio_seconds / wall,
        "steps": req["steps"],
        "cfg": res.metadata["cfg"],
        "rhythm_cfg": res.metadata.get("rhythm_cfg"),
        "guidance_interval": res.metadata.get("guidance_interval"),
        "grid_guidance": res.metadata.get("grid_guidance"),
        "key_guidance": res.metadata.get("key_guidance"),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "precision": "bf16" if use_bf16("cpu") else "float32",  # bf16 only where the CPU has bf16 arithmetic
        "model": str(model),
        "seed": req["seed"],
        "prompt": req["prompt"],
        "bpm": req["bpm"],
        "key": req["key"],
        "meter": req["meter"],
        "heard_bpm": tempo,
        "tempo_acc1": acc["acc1"],
        "tempo_acc2": acc["acc2"],
        "heard_key": f"{est_key[0]} {est_key[1]}",
        "key_score_mirex": key_score((tonic, mode), est_key),
    }
    (root / "demo.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report))
    print(f"wrote {wav_path} and {png}", file=sys.stderr)
    return 0


def run_corpus_demo(out: str | Path | None = None) -> int:
    """Render three corpus excerpts, check their labels and round-trip them through the codec."""
    from accelerando.data.build import BuildConfig, build_corpus, read_manifest
    from accelerando.data.check import check_clip
    from accelerando.paths import cache_dir
    from accelerando.pretrained import load_codec

    root = Path(out).expanduser() if out else cache_dir("demo")
    cfg = BuildConfig(
        out=root / "corpus", collections=_DEMO_COLLECTIONS, limit=1, variants=1, max_seconds=20, workers=1
    )
    print(f"rendering {len(_DEMO_COLLECTIONS)} corpus excerpts into {cfg.out} ...", file=sys.stderr)
    build_corpus(cfg, progress=sys.stderr.isatty())
    rows = [r for r in read_manifest(cfg.out) if r["collection"] in _DEMO_COLLECTIONS]
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
    from accelerando.modules.precision import autocast

    wav, sr = load(clip / "mix.flac", sample_rate=codec.sample_rate, mono=True)
    with torch.inference_mode():
        z = codec.encode(wav[None])
        t = time.perf_counter()
        with autocast("cpu"):
            rec = codec.decode(z)[0, :, : wav.shape[-1]].float()
        wall = time.perf_counter() - t
    out = root / "codec" / f"{clip.name}.wav"
    save(out, rec, codec.sample_rate)
    return {
        "codec_audio": str(out),
        "codec_mrstft": mrstft(rec[0], wav[0]),
        "codec_decode_x_realtime": wav.shape[-1] / codec.sample_rate / wall,
    }
