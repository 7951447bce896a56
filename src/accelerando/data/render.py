"""Render note lists to audio with FluidSynth (libfluidsynth through pyfluidsynth), one stem per part.

Notes are scheduled by sample position directly on the synthesizer, with no MIDI file or player in between.
FluidSynth applies events at its 64-sample block boundaries, so an onset sounds at most 63 samples (2.6 ms at
24 kHz) after its exact score time, plus the attack of the soundfont sample.

The mix is defined as the sum of the stems, so stems sum to the mix up to the 16-bit quantisation of the files.
"""

import ctypes
import os
import shutil

import numpy as np

__all__ = ["Renderer", "find_soundfont", "check_fluidsynth", "SOUNDFONT_ENV", "SOUNDFONT_CANDIDATES"]

SOUNDFONT_ENV = "ACCELERANDO_SOUNDFONT"
SOUNDFONT_CANDIDATES = (
    "/usr/share/sounds/sf2/FluidR3_GM.sf2",  # Debian fluid-soundfont-gm
    "/usr/share/sounds/sf2/default-GM.sf2",
    "/usr/share/sounds/sf2/TimGM6mb.sf2",  # Debian timgm6mb-soundfont
)


class RenderSetupError(RuntimeError):
    """FluidSynth or a soundfont is missing; the message says what to install."""


def find_soundfont(path: str | None = None) -> str:
    """Resolve the soundfont: ``path``, else ``$ACCELERANDO_SOUNDFONT``, else the first installed Debian GM font."""
    path = path or os.environ.get(SOUNDFONT_ENV)
    if path:
        if not os.path.isfile(path):
            raise RenderSetupError(f"soundfont {path!r} does not exist; pass an existing .sf2 file")
        return path
    for cand in SOUNDFONT_CANDIDATES:
        if os.path.isfile(cand):
            return cand
    raise RenderSetupError(
        "no General MIDI soundfont found; install the Debian package fluid-soundfont-gm "
        f"(apt-get install fluid-soundfont-gm) or set {SOUNDFONT_ENV}"
    )


def check_fluidsynth() -> None:
    """Raise RenderSetupError naming the package to install when libfluidsynth cannot be loaded."""
    try:
        import fluidsynth  # noqa: F401
    except ImportError as err:
        hint = "pip install pyfluidsynth" if "No module named" in str(err) else "apt-get install fluidsynth"
        raise RenderSetupError(f"FluidSynth is not available ({err}); install it with `{hint}`") from None
    except OSError as err:  # pragma: no cover - depends on the system library
        raise RenderSetupError(f"libfluidsynth failed to load ({err}); apt-get install fluidsynth") from None


def fluidsynth_version() -> str:
    exe = shutil.which("fluidsynth")
    try:
        import fluidsynth

        fn = fluidsynth._fl.fluid_version_str
        fn.restype = ctypes.c_char_p
        return fn().decode()
    except Exception:
        return "unknown" if exe is None else "cli"


class Renderer:
    """A FluidSynth instance with one soundfont loaded, reused for every stem a worker renders."""

    def __init__(self, soundfont: str, sample_rate: int = 24000, gain: float = 0.3, reverb: bool = True):
        check_fluidsynth()
        import fluidsynth

        self.sample_rate = sample_rate
        self.soundfont = soundfont
        settings = {"synth.reverb.active": int(reverb), "synth.chorus.active": 0}
        self._synth = fluidsynth.Synth(gain=gain, samplerate=float(sample_rate), **settings)
        self._sfid = self._synth.sfload(soundfont)
        if self._sfid < 0:
            raise RenderSetupError(f"FluidSynth could not load soundfont {soundfont!r}; pass a valid .sf2 file")
        write = fluidsynth._fl.fluid_synth_write_float
        write.argtypes = [ctypes.c_void_p, ctypes.c_int] + [ctypes.c_void_p, ctypes.c_int, ctypes.c_int] * 2
        write.restype = ctypes.c_int
        self._write = write

    def render_part(
        self, notes: list[tuple[float, float, int, int]], program: int, num_samples: int, pan: int = 64
    ) -> np.ndarray:
        """Render one part.

        Args:
            notes: (start s, end s, MIDI pitch, velocity) tuples.
            program: General MIDI program (0-based, bank 0).
            num_samples: output length S.
            pan: MIDI pan, 0 (left) .. 127 (right).

        Returns:
            float32 array [2, S] (left, right).
        """
        fs = self._synth
        self._flush()
        fs.program_select(0, self._sfid, 0, program)
        fs.cc(0, 10, pan)
        sr = self.sample_rate
        events = []
        for start, end, pitch, vel in notes:
            on = int(round(start * sr))
            off = max(on + 1, int(round(end * sr)))
            events.append((on, 1, pitch, vel))
            events.append((off, 0, pitch, 0))
        events.sort()  # note-offs before note-ons at the same sample, so repeated pitches re-strike
        out = np.zeros((2, num_samples), dtype=np.float32)
        cur = 0
        for pos, kind, pitch, vel in events:
            pos = min(pos, num_samples)
            if pos > cur:
                self._render_into(out, cur, pos - cur)
                cur = pos
            if kind:
                fs.noteon(0, pitch, vel)
            else:
                fs.noteoff(0, pitch)
        if num_samples > cur:
            self._render_into(out, cur, num_samples - cur)
        return out

    def _flush(self) -> None:
        """Return the synth to silence: reset, then run it until voices and reverb tails have died out.

        ``fluid_synth_system_reset`` takes effect at the next rendered block and releases rather than cuts voices,
        so without this a stem would begin with the tail of the previous one.
        """
        self._synth.system_reset()
        buf = np.zeros((2, 1024), dtype=np.float32)
        for _ in range(int(20 * self.sample_rate / 1024)):  # at most 20 s
            self._render_into(buf, 0, 1024)
            if np.abs(buf).max() < 1e-6:  # -120 dBFS: the reverb can hold a tiny DC offset for ever
                return

    def _render_into(self, out: np.ndarray, offset: int, n: int) -> None:
        left, right = out[0], out[1]
        step = 1 << 16
        done = 0
        while done < n:
            k = min(step, n - done)
            lp = left.ctypes.data + 4 * (offset + done)
            rp = right.ctypes.data + 4 * (offset + done)
            if self._write(self._synth.synth, k, lp, 0, 1, rp, 0, 1) != 0:
                raise RuntimeError("fluid_synth_write_float failed")
            done += k

    def close(self) -> None:
        self._synth.delete()
